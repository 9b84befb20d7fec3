"""`add_sae_scores`: the output side for every result, coherence for labeled ones."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.records.result import LabelResult, Trajectory
from saelens_tokenlabel.sae.scorers.apply import ScoreConfig, add_sae_scores
from saelens_tokenlabel.sae.scorers.coherence import SCORE_KEYS, CoherenceConfig
from saelens_tokenlabel.sae.subject import Subject

from .planted import (
    ANIMAL_FEATURE,
    DEAD_FEATURE,
    DIGIT_FEATURE,
    planted_sae,
    single_token,
    subject_model,
)

CAT_DIR = 10
CONFIG = ScoreConfig(options={"output_side": {"k": 3},
                              "coherence": CoherenceConfig(count="prompt")})


@pytest.fixture(scope="module")
def setup(subject_tokenizer):
    """Feature 0's decoder row promotes " cat" (then " dog"); the SAE is otherwise planted."""
    model = subject_model(subject_tokenizer)
    sae = planted_sae()
    with torch.no_grad():
        model.W_U[CAT_DIR] = 0.0
        model.W_U[CAT_DIR, single_token(subject_tokenizer, " cat")] = 5.0
        model.W_U[CAT_DIR, single_token(subject_tokenizer, " dog")] = 4.0
        sae.W_dec[ANIMAL_FEATURE] = 0.0
        sae.W_dec[ANIMAL_FEATURE, CAT_DIR] = 1.0
    return model, sae


def _ok(feature: int, label: str) -> LabelResult:
    return LabelResult(label=label, label_tokens=[label], label_token_ids=[1], probability=0.9,
                       converged=True, steps=5, metrics={"heldout_balanced_accuracy": 1.0},
                       trajectory=Trajectory(), feature=feature)


def _results():
    return [_ok(ANIMAL_FEATURE, "cat"), _ok(DIGIT_FEATURE, "blue"),
            status_result(DEAD_FEATURE, "dead", "never fires")]


def test_output_side_for_all_coherence_for_labeled(setup):
    model, sae = setup
    given = _results()
    before = [r.to_dict() for r in given]
    results = add_sae_scores(given, Subject.of(model, sae), config=CONFIG)
    # New results; the given ones are as they were (results are built once).
    assert [r.to_dict() for r in given] == before
    assert all(a is not b and a.metrics is not b.metrics for a, b in zip(given, results,
                                                                             strict=True))
    cat, blue, dead = results
    assert cat.extra.output_side.promoted[:2] == ((" cat", 5.0), (" dog", 4.0))
    assert cat.extra.to_dict()["output_side"]["promoted"][:2] == [[" cat", 5.0], [" dog", 4.0]]
    assert dead.extra.message == "never fires"  # what the result had is kept
    assert cat.metrics["output_label_rank"] == 1  # the label is what the direction writes
    assert cat.metrics["coherence_hit_rate"] == 1.0 and cat.metrics["coherence_ratio"] > 1
    assert blue.metrics["coherence_hit_rate"] == 0.0 and blue.metrics["coherence_ratio"] == 0
    assert isinstance(blue.metrics["output_label_rank"], int)
    assert blue.metrics["output_label_rank"] > 1
    for r in (cat, blue):
        assert set(SCORE_KEYS) <= set(r.metrics)
        assert r.metrics["heldout_balanced_accuracy"] == 1.0  # kept
        assert r.extra.coherence_config["count"] == "prompt"
    # A dead feature keeps its decoder direction, so it gets the output side only.
    assert len(dead.extra.output_side.promoted) == 3
    assert len(dead.extra.output_side.suppressed) == 3
    assert not set(SCORE_KEYS) & set(dead.metrics) and "output_label_rank" not in dead.metrics
    for r in results:  # the scores survive the result's JSON round trip
        again = LabelResult.from_json(json.dumps(r.to_dict(), allow_nan=False))
        assert again.metrics == r.metrics and again.extra == r.extra


def test_config_switches(setup):
    model, sae = setup
    results = add_sae_scores(_results(), Subject.of(model, sae),
                             config=ScoreConfig(scorers=("output_side", "steering")))
    assert all(r.extra.output_side is not None for r in results)
    assert not any(k in r.metrics for r in results for k in SCORE_KEYS)
    results = add_sae_scores(_results(), Subject.of(model, sae), config=ScoreConfig(
        scorers=("coherence",), options={"coherence": {"count": "prompt"}}))
    assert not any(r.extra.output_side is not None for r in results)
    assert results[0].metrics["coherence_hit_rate"] == 1.0
    assert ScoreConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(ValueError, match="k must be >= 1"):
        ScoreConfig(options={"output_side": {"k": 0}})
    bad = dataclasses.replace(_ok(ANIMAL_FEATURE, "cat"), feature="my-feature")
    with pytest.raises(ValueError, match="feature index"):
        add_sae_scores([bad], Subject.of(model, sae))
