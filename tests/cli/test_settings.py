"""Run settings as a file: `tokenlabel config DIR` prints a run's settings, `tokenlabel label
--config FILE` takes them (flags override), and a run started from the printed file binds the
same settings. A misspelt key is a one-line error."""

from __future__ import annotations

import json

import yaml

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.run import RunStore

from .test_label import saved_inputs

QUICK = ["--steps", "2", "--batch-size", "6", "--n-top", "4", "--n-quantile", "4",
         "--n-random", "4", "--n-near-miss", "4", "--lambda-kl", "0.15", "--no-use-cache",
         "--restarts", json.dumps([{"lr": 0.2, "seed": 5}]), "--no-score", "coherence",
         "--no-score", "steering", "--score-option", "output_side.k=4", "--amortize",
         "--amortize-seed-features", "2"]


def _bound(run):
    with RunStore(run, create=False) as store:
        meta = store.meta()
    info = meta["info"]
    return {k: meta[k] for k in ("label_config", "example_config", "amortize")} | {
        k: info[k] for k in ("cache_config", "score_config")}


def test_a_run_started_from_the_printed_settings_binds_the_same(
        subject, fast_evaluator, toy_corpus, tmp_path, capsys):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:50]) + "\n")
    inputs = ["--sae-path", str(sae_dir), "--model", str(model_dir), "--corpus", str(corpus),
              "--features", "0:3", "--evaluator", str(ev_dir), "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache")]
    assert main(["label", *inputs, "--out", str(tmp_path / "a"), *QUICK]) == 0
    capsys.readouterr()
    assert main(["config", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    file = tmp_path / "run.yaml"
    file.write_text(printed)
    sections = yaml.safe_load(printed)
    assert sections["label"]["lambda_kl"] == 0.15
    assert sections["label"]["performance"]["use_cache"] is False
    assert sections["scores"]["options"]["output_side"] == {"k": 4}
    assert sections["amortize"]["seed_features"] == 2
    assert main(["label", *inputs, "--out", str(tmp_path / "b"), "--config", str(file)]) == 0
    assert _bound(tmp_path / "b") == _bound(tmp_path / "a")
    # Flags override the file.
    assert main(["label", *inputs, "--out", str(tmp_path / "c"), "--config", str(file),
                 "--steps", "3", "--no-score", "output_side"]) == 0
    c = _bound(tmp_path / "c")
    assert c["label_config"]["steps"] == 3 and c["label_config"]["lambda_kl"] == 0.15
    assert c["score_config"]["scorers"] == []


def test_a_bad_settings_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "run.yaml"
    for text, want in (("label:\n  lamda_kl: 0.1\n", "LabelConfig has no field 'lamda_kl'"),
                       ("label:\n  performance:\n    use_cash: true\n",
                        "PerformanceConfig has no field 'use_cash'"),
                       ("labels: {}\n", "unknown section(s) labels"),
                       ("label: [1\n", "is not a YAML file")):
        file.write_text(text)
        assert main(["label", "--sae-path", "x", "--corpus", "c.txt", "--evaluator", "toy",
                     "--out", str(tmp_path / "o"), "--config", str(file)]) == 2
        err = capsys.readouterr().err.strip()
        assert want in err and "\n" not in err and str(file) in err
