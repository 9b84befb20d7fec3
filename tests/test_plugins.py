"""The plug-in seams, used from outside the package: a user's scorer runs in
`sae.label_features` and `tokenlabel label --score NAME`, and shows in the results, the
report and the exports; a user's explanation format is read by `tokenlabel compare`.
Registering a name twice is a one-line error."""

from __future__ import annotations

import csv
import json

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.formats.comparison import COMPARE_JSON, Comparison
from saelens_tokenlabel.formats.explanations import (
    ExplanationSourceError,
    read_explanations,
    register_reader,
)
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig
from saelens_tokenlabel.sae.scorers import ScorerError, known_scorers, register_scorer

from . import user_plugins
from .cli.test_label import QUICK, label_argv, saved_inputs
from .sae.compare_run import EXPLANATIONS, labeled_run
from .sae.planted import planted_sae

FEW = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4)


def test_registering_a_name_twice_is_a_one_line_error():
    with pytest.raises(ScorerError, match="named 'label_chars' is registered already") as err:
        register_scorer(user_plugins.LabelChars())
    assert "\n" not in str(err.value)
    with pytest.raises(ScorerError, match="named 'steering' is registered already"):
        register_scorer(type("Mine", (user_plugins.LabelChars,), {"name": "steering"})())
    with pytest.raises(ExplanationSourceError, match="named 'user-csv' is registered"):
        register_reader(user_plugins.CsvReader())
    with pytest.raises(ValueError, match="no scorer named 'nope'"):
        ScoreConfig(scorers=("nope",))
    assert user_plugins.SCORER in known_scorers()


def test_a_user_scorer_runs_and_shows_in_results_report_and_exports(
        subject, fast_evaluator, toy_corpus, tmp_path):
    run_dir = tmp_path / "run"
    labels = planted_sae().label_features(
        subject, fast_evaluator, toy_corpus[:60], [0, 1, 2], LabelConfig(steps=2, batch_size=6),
        cache=CacheConfig(cache_dir=tmp_path / "cache"), examples=FEW, run_dir=run_dir,
        scores=ScoreConfig(scorers=("output_side", user_plugins.SCORER)))
    for f in (0, 1):
        assert labels[f].metrics["label_chars"] == len(labels[f].label)
    assert "label_chars" not in labels[2].metrics  # labeled_only: the dead one is not scored
    scorers = [e["name"] for e in labels.info["scorers"]]
    assert scorers == ["output_side", user_plugins.SCORER]
    assert main(["report", str(run_dir), "--no-plots"]) == 0
    assert "label length (chars)" in (run_dir / "report" / "index.html").read_text()
    assert main(["export", str(run_dir), "--format", "csv"]) == 0
    with (run_dir / "labels.csv").open() as fh:
        rows = {int(r["feature"]): r for r in csv.DictReader(fh)}
    assert float(rows[0]["label_chars"]) == len(labels[0].label)
    records = [json.loads(x) for x in (run_dir / "neuronpedia.jsonl").read_text().splitlines()]
    scored = {s["explanationScoreTypeName"]: s["value"] for s in records[0]["scores"]}
    assert scored["token_space_gd_label_chars"] == len(labels[0].label)


def test_tokenlabel_label_runs_a_user_scorer_named_on_the_command_line(
        subject, fast_evaluator, toy_corpus, tmp_path):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:50]) + "\n")
    out = tmp_path / "out"
    args = label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:2", *QUICK,
                      "--batch-size", "6", "--import", "tests.user_plugins", "--score",
                      "label_chars", "--score", "output_side", out=out)
    assert main(args) == 0
    stored = json.loads((out / "tokenlabel_labels.json").read_text())["results"]
    assert all(r["metrics"]["label_chars"] == len(r["label"]) for r in stored)
    assert main(["label", *args[1:-4], "--import", "no_such_module_here"]) == 2


@pytest.mark.slow
def test_tokenlabel_compare_reads_a_user_format(toy_evaluator, tmp_path, capsys):
    run_dir, tok_dir = labeled_run(tmp_path, toy_evaluator)
    src = tmp_path / "theirs.csv"
    src.write_text("feature,explanation\n" + "".join(f"{f},{t}\n"
                                                      for f, t in EXPLANATIONS.items()))
    assert read_explanations(src).info.format == user_plugins.READER
    assert main(["compare", str(run_dir), "--explanations", str(src), "--model", str(tok_dir),
                 "--device", "cpu", "--import", "tests.user_plugins"]) == 0
    saved = Comparison.load(run_dir / COMPARE_JSON)
    assert saved.source.format == user_plugins.READER
    assert [r.feature for r in saved.features] == sorted(EXPLANATIONS)
    assert "user-csv" in capsys.readouterr().out
