"""`compare_labels` / `LabelSet.compare` on a real run of the planted SAE: the run's label
re-scored reproduces its stored held-out scores (same examples, same split, same scorer);
right explanations score like the run's labels, wrong ones lose; every source layout gives the
same comparison."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from saelens_tokenlabel import Evaluator, LabelSet
from saelens_tokenlabel.formats.comparison import OURS, TIE, Comparison
from saelens_tokenlabel.run import load_labelset
from saelens_tokenlabel.sae.compare import compare_labels

from ..explanation_files import write_layouts
from .compare_run import EXPLANATIONS, LATER, labeled_run

DETECTION = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc")


@pytest.fixture(scope="module")
def run(toy_evaluator, tmp_path_factory):
    """The labeled run (about 3 s: the module stays in the fast tier), its subject tokenizer,
    and `EXPLANATIONS` in every source layout."""
    d = tmp_path_factory.mktemp("compare")
    run_dir, tok_dir = labeled_run(d, toy_evaluator)
    return SimpleNamespace(dir=run_dir, tokenizer=AutoTokenizer.from_pretrained(str(tok_dir)),
                           labels=load_labelset(run_dir),
                           files=write_layouts(EXPLANATIONS, d / "sources", later=LATER))


@pytest.fixture(scope="module")
def comparison(run, toy_evaluator) -> Comparison:
    return compare_labels(run.labels, run.files["tsv"], toy_evaluator, run.tokenizer)


def test_rescoring_the_run_label_reproduces_its_stored_heldout_scores(run, comparison):
    assert [r.feature for r in comparison.features] == [0, 1, 3, 4]
    for row in comparison.features:
        result = run.labels[row.feature]
        assert row.ours.token_ids == tuple(result.label_token_ids)
        assert row.n_heldout == result.n_heldout
        for name in DETECTION:
            key = "heldout_" + name
            assert row.ours.scores[key] == result.metrics[key], (row.feature, key)
        assert row.ours.scores["heldout_loss_accuracy"] == pytest.approx(
            result.metrics["heldout_loss_accuracy"], rel=1e-5)
        assert row.ours.score == row.stored_score == result.metrics["heldout_balanced_accuracy"]


def test_right_explanations_tie_wrong_ones_lose_and_the_counts_are_exact(run, comparison,
                                                                          toy_evaluator):
    rows = {r.feature: r for r in comparison.features}
    assert run.labels[0].label == "animal"
    # The planted concept's word is our label's token: the same prompt, the same score.
    assert rows[0].theirs.token_ids == rows[0].ours.token_ids
    assert (rows[0].winner, rows[0].difference) == (TIE, 0.0)
    for f in (1, 4):  # another concept: the toy evaluator says "0" to every word
        assert rows[f].winner == OURS
        assert rows[f].theirs.score == 0.5 < rows[f].ours.score
    sentence = rows[3].theirs
    assert sentence.text == EXPLANATIONS[3]  # scored as written, however long
    assert sentence.token_ids == tuple(toy_evaluator._tokenize(EXPLANATIONS[3]))
    assert sentence.n_tokens == 14
    s = comparison.summary
    assert (s.n_features, s.wins, s.ties, s.losses, s.undefined) == (4, 2, 2, 0, 0)
    diffs = [r.difference for r in comparison.features]
    assert s.mean_difference == pytest.approx(sum(diffs) / 4)
    assert s.interval[0] <= s.mean_difference <= s.interval[1]
    assert comparison.not_compared == {2: "no label in the run (dead)"}
    assert comparison.source.duplicates == 1  # feature 0's later "color": first by file order
    assert (comparison.evaluator, comparison.run_evaluator, comparison.notes) == (
        toy_evaluator.name, toy_evaluator.name, ())


def test_every_source_layout_gives_the_same_comparison(run, comparison, toy_evaluator):
    def rows(c: Comparison) -> list:
        return [dataclasses.replace(r, where="") for r in c.features]

    for name, path in run.files.items():
        other = compare_labels(run.labels, path, toy_evaluator, run.tokenizer)
        assert rows(other) == rows(comparison), name
        assert other.summary == comparison.summary, name


def test_labelset_compare_from_python(run, toy_evaluator):
    # A synonym of the run's label scores like it; a dict is a source; metric by keyword.
    got = run.labels.compare({1: "number", 0: "animal"}, toy_evaluator, run.tokenizer,
                             metric="f1", bootstrap_samples=100)
    assert got.summary.metric == "f1"
    assert [r.winner for r in got.features] == [TIE, TIE]
    assert got[1].theirs.score == got[1].ours.score == run.labels[1].metrics["heldout_f1"]
    assert got.not_compared == {2: "no label in the run (dead)",
                                3: "no explanation in the source",
                                4: "no explanation in the source"}
    only = run.labels.compare(run.files["jsonl"], toy_evaluator, run.tokenizer, features=[4, 9])
    assert [r.feature for r in only.features] == [4]
    assert only.not_compared == {9: "not labeled in this run"}
    assert only.unused_explanations == 3


def test_a_comparison_that_cannot_be_made_says_why(run, toy_evaluator):
    with pytest.raises(ValueError, match="carry no record of their run"):
        LabelSet(list(run.labels.values())).compare({0: "animal"}, toy_evaluator, run.tokenizer)
    with pytest.raises(ValueError, match="No feature has both a label in this run and an "
                                         "explanation"):
        run.labels.compare({2: "nothing", 7: "x"}, toy_evaluator, run.tokenizer)
    with pytest.raises(TypeError, match="wrap the model"):
        run.labels.compare({0: "animal"}, toy_evaluator.model, run.tokenizer)
    moved = copy.deepcopy(run.labels)
    moved.info["activation_cache"] = str(run.dir / "gone")
    with pytest.raises(FileNotFoundError, match="activation cache .* is gone"):
        moved.compare({0: "animal"}, toy_evaluator, run.tokenizer)


def test_another_evaluator_is_noted(run, toy_evaluator):
    other = Evaluator(toy_evaluator.model, name="another")
    got = run.labels.compare({0: "animal"}, other, run.tokenizer, bootstrap_samples=10)
    assert got.evaluator == "another"
    assert got.notes and "the run labeled with 'toy-llama-evaluator'" in got.notes[0]


def test_our_own_neuronpedia_export_ties_everywhere(run, toy_evaluator, tmp_path):
    # Our labels, written as Neuronpedia explanations and read back as "theirs": every
    # feature ties, whatever its label (a byte-fragment label re-tokenizes differently as
    # text, and still rates the examples alike here).
    run.labels.to_neuronpedia(tmp_path / "ours.jsonl")
    got = run.labels.compare(tmp_path / "ours.jsonl", toy_evaluator, run.tokenizer,
                             bootstrap_samples=100)
    assert [r.winner for r in got.features] == [TIE] * 4
    assert got.summary.interval == (0.0, 0.0)
    assert got.source.neuronpedia_ids == ("tiny-subject/0-res-test",)
