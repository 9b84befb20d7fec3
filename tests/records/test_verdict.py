"""The verdict: the success test, the held-out interval (exact, checked against sampling), and
each verdict's case; results read from older files get one that is never written back."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from saelens_tokenlabel import LabelResult, LabelSet, Trajectory
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.records.result import Polysemantic
from saelens_tokenlabel.records.verdict import (
    VerdictSettings,
    balanced_accuracy_interval,
    heldout_counts,
    passes,
    split_score,
    verdict_of,
    with_verdict,
)


@pytest.mark.parametrize("counts", [(8, 8, 12, 12), (7, 8, 12, 12), (4, 8, 6, 12),
                                    (1, 1, 3, 3), (19, 20, 28, 30)])
def test_the_interval_is_the_posterior_of_the_mean_of_two_jeffreys_rates(counts):
    tp, n_pos, tn, n_neg = counts
    rng = np.random.default_rng(0)
    draws = (rng.beta(tp + 0.5, n_pos - tp + 0.5, 2_000_000)
             + rng.beta(tn + 0.5, n_neg - tn + 0.5, 2_000_000)) / 2
    want = np.quantile(draws, [0.05, 0.95])
    got = balanced_accuracy_interval(tp, n_pos, tn, n_neg, 0.95)
    assert got == pytest.approx(tuple(want), abs=2e-3)


def test_the_bound_tells_a_right_label_from_chance():
    perfect = balanced_accuracy_interval(8, 8, 12, 12)[0]
    one_slip = balanced_accuracy_interval(7, 8, 12, 12)[0]
    chance = balanced_accuracy_interval(4, 8, 6, 12)[0]
    assert perfect > one_slip > 0.75 > 0.5 > chance
    # More evidence, a tighter bound.
    assert balanced_accuracy_interval(40, 40, 60, 60)[0] > perfect
    with pytest.raises(ValueError, match="both classes"):
        balanced_accuracy_interval(3, 3, 0, 0)


def _result(**changes):
    metrics = {"validation_balanced_accuracy": 1.0, "heldout_balanced_accuracy": 1.0,
               "heldout_tp": 8.0, "heldout_fn": 0.0, "heldout_tn": 12.0, "heldout_fp": 0.0}
    metrics.update(changes.pop("metrics", {}))
    base = LabelResult(label="animal", label_tokens=["animal"], label_token_ids=[5],
                       probability=0.99, converged=True, steps=90, metrics=metrics,
                       trajectory=Trajectory(), feature=0, n_heldout=20)
    return dataclasses.replace(base, **changes)


S = VerdictSettings(success_score=0.9, bar=0.75, level=0.95)


def test_each_verdict_and_its_reason():
    good = verdict_of(_result(), S)
    assert good.value == "explained" and good.passes and good.counts == (8, 8, 12, 12)
    assert good.low == pytest.approx(0.8632, abs=1e-3) and good.heldout == 1.0
    assert "lower bound 0.86 >= 0.75" in good.reason
    assert verdict_of(_result(converged=False), S).reason == "the label did not converge"
    low_val = verdict_of(_result(metrics={"validation_balanced_accuracy": 0.8}), S)
    assert low_val.value == "weak" and "selection balanced accuracy 0.80 < 0.9" in low_val.reason
    fixable = verdict_of(_result(metrics={"validation_fixable_errors": 2.0}), S)
    assert fixable.value == "weak" and "2 validation errors that another label fixes" in \
        fixable.reason
    # Training errors another label fixes keep refinement going (`passes`), but a label kept
    # over those alternatives is judged where it was chosen: they do not make it weak.
    kept = _result(metrics={"train_fixable_errors": 1.0})
    assert not passes(kept, 0.9) and verdict_of(kept, S).value == "explained"
    # Without a validation split, training is where the label was chosen: they count.
    no_val = _result(metrics={"train_fixable_errors": 1.0, "train_balanced_accuracy": 1.0,
                              "validation_balanced_accuracy": float("nan")})
    assert verdict_of(no_val, S).value == "weak"
    # Validation looks perfect, held-out is at chance: the selection bias the bound catches.
    chance = verdict_of(_result(metrics={"heldout_balanced_accuracy": 0.54, "heldout_tp": 4.0,
                                         "heldout_fn": 4.0, "heldout_tn": 7.0,
                                         "heldout_fp": 5.0}), S)
    assert chance.value == "weak" and chance.passes and chance.low < 0.5
    none_held = verdict_of(_result(metrics={"heldout_tn": 0.0}, n_heldout=8), S)
    assert none_held.value == "weak" and "no held-out examples" in none_held.reason
    poly = Polysemantic(["color", "food"], [[1], [2]], [0.7, 0.7], 0.95, [0.5, 0.5])
    assert verdict_of(_result(polysemantic=poly), S).value == "polysemantic"
    assert status_result(3, "dead", "never fires").verdict.value == "dead"
    assert status_result(3, "unlabelable", "x").verdict.reason == "x"


def test_one_rule_for_scores_and_success():
    r = _result(metrics={"train_balanced_accuracy": 0.97})
    assert split_score(r.metrics) == ("heldout_balanced_accuracy", 1.0)
    assert split_score({"train_balanced_accuracy": 0.9}) == ("train_balanced_accuracy", 0.9)
    assert r.score == 1.0 and r.score_name == "heldout_balanced_accuracy"
    assert passes(r, 0.9) and not passes(r, 1.01)
    assert not passes(_result(metrics={"train_fixable_errors": 1.0}), 0.9)


def test_an_older_result_gets_a_verdict_that_is_never_written_back():
    d = _result().to_dict()  # no confusion counts either, below
    assert "verdict" not in d  # made by hand: none yet; as version 0.1 wrote results
    for k in ("heldout_tp", "heldout_fn", "heldout_tn", "heldout_fp"):
        del d["metrics"][k]
    d["metrics"].update(heldout_recall=1.0, heldout_accuracy=1.0)
    r = LabelResult.from_dict(json.loads(json.dumps(d)))
    assert r.verdict.derived and r.verdict.value == "explained"
    assert "verdict" not in r.to_dict() and r.to_dict() == d
    fresh = with_verdict(r)
    assert not fresh.verdict.derived and "verdict" in fresh.to_dict()
    assert LabelResult.from_dict(fresh.to_dict()).verdict == fresh.verdict
    # Counts worked out from recall, balanced accuracy and accuracy (4/8 + 11/12 right).
    m = {"heldout_recall": 0.5, "heldout_balanced_accuracy": (0.5 + 11 / 12) / 2,
         "heldout_accuracy": 15 / 20}
    assert heldout_counts(m, 20) == (4, 8, 11, 12)


def test_label_sets_count_verdicts_and_keep_only_explained_labels():
    weak = _result(feature=1, metrics={"validation_balanced_accuracy": 0.6})
    labels = LabelSet([with_verdict(_result()), with_verdict(weak),
                       status_result(2, "dead", "never fires")])
    assert labels.by_verdict() == {"explained": [0], "weak": [1], "dead": [2]}
    assert labels.explained == {0: "animal"} and labels.labels == {0: "animal", 1: "animal"}
    assert list(labels.only_explained()) == [0]
    assert labels.summary()["labels"]["1"]["verdict"] == "weak"
    # A result made by hand without one is judged when it joins a set.
    assert LabelSet([_result()])[0].verdict.value == "explained"
