from __future__ import annotations

import json
import subprocess
import sys

import pytest

from saelens_tokenlabel import LabelResult
from saelens_tokenlabel.cli import main


@pytest.mark.subprocess
def test_help_runs_as_installed_command():
    out = subprocess.run([sys.executable, "-m", "saelens_tokenlabel.cli", "--help"],
                         capture_output=True, text=True, check=True)
    assert "synthetic" in out.stdout


def test_synthetic_with_local_evaluator_dir(tmp_path, capsys):
    from saelens_tokenlabel.toy import TOY_EVALUATOR_DIR

    out = tmp_path / "numbers.json"
    code = main(["synthetic", "numbers", "--evaluator", str(TOY_EVALUATOR_DIR),
                 "--out", str(out), "--steps", "40", "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    result = LabelResult.from_dict(json.loads(out.read_text()))
    assert f"label:        {result.label!r}" in printed
    assert "probability:" in printed and "entropy" in printed and "kl" in printed
    assert result.steps <= 40 and result.config["seed"] == 1
    assert result.config["batch_size"] == 20  # the numbers preset of Table 1


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    code = main(["synthetic", "animals", "--evaluator", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tokenlabel: error:") and "save_local_model" in err
    assert main(["synthetic", "animals", "--evaluator", "toy", "--lr", "-1"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_before_the_one_line(tmp_path, capsys, monkeypatch, how):
    argv = ["status", str(tmp_path)]
    assert main(argv) == 2
    plain = capsys.readouterr().err
    assert plain.count("\n") == 1 and "Traceback" not in plain
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("TOKENLABEL_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "FileNotFoundError: No run store" in err
    assert err.splitlines()[-1] == plain.strip()  # the same line last
    monkeypatch.setenv("TOKENLABEL_DEBUG", "0")
    assert main(["status", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
