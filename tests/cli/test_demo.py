"""`tokenlabel demo`: the main job on the embedded toy world, offline."""

from __future__ import annotations

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.run import load_labelset


@pytest.mark.slow
def test_demo_labels_the_planted_sae_and_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    labels = load_labelset(tmp_path / "run")
    assert list(labels) == list(range(8))
    assert labels[0].label == "animal"  # the planted animal feature
    # The digit feature: the toy corpus writes numbers as digits only, so both fit.
    assert labels[1].label in ("digit", "number")
    assert labels[2].status == "dead"
    index = tmp_path / "run" / "report" / "index.html"
    assert index.is_file() and str(index) in printed
    assert (tmp_path / "run" / "run.sqlite").is_file()
    assert (tmp_path / "inputs" / "sae" / "cfg.json").is_file()
