"""End to end: the trained toy evaluator, a feature planted on a concept's words, and
`label_feature` must find the concept's token."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel import (
    Evaluator,
    FeatureData,
    FeatureDataError,
    LabelConfig,
    label_feature,
    label_features_data,
)
from saelens_tokenlabel.descent.labeler import split_holdout
from saelens_tokenlabel.records.errors import PromptTooLongError
from saelens_tokenlabel.toy import (
    CONCEPTS,
    SUBSETS,
    load_toy_evaluator,
    noisy_feature,
    subset_feature,
    union_feature,
)
from saelens_tokenlabel.toy.features import concept_feature


@pytest.mark.parametrize("data", [*sorted(CONCEPTS), "animals", "mammals", "numbers",
                                  "mammal_text"])
def test_default_config_labels_every_concept_without_tuning(toy_evaluator, data):
    # One config for all: the planted concepts (mammal ⊂ animal included) and the paper's
    # synthetic datasets, including mammal_text, where the paper's method answers "animal".
    feature = (concept_feature(data) if data in CONCEPTS else FeatureData.synthetic(data))
    concept = data if data in CONCEPTS else {"animals": "animal", "mammals": "mammal",
                                             "numbers": "number", "mammal_text": "mammal"}[data]
    result = label_feature(feature, toy_evaluator, LabelConfig())
    assert result.label == concept, result.attempts
    assert result.converged and result.probability >= 0.9
    assert result.metrics["heldout_balanced_accuracy"] >= 0.9
    assert sum(a.selected for a in result.attempts) == 1




PARENT_PRIOR = 2.0
"""Logit bias for the parent's token at the label slot: the evaluator's prior favours the
parent, as a large LLM's favours "animal" over "mammal"."""


@pytest.fixture(scope="module")
def parent_favouring():
    """subset -> the toy evaluator with a prior for the subset's parent."""
    return {sub: load_toy_evaluator(label_prior={parent: PARENT_PRIOR})
            for sub, parent in SUBSETS.items()}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_default_config_gives_the_specific_label_where_the_parent_is_favoured(
        parent_favouring, subset, seed):
    # The paper's hierarchy failure (§3.2): the feature fires on a subset's members, the
    # parent's other members are 5 words in about 800, and the prior favours the parent.
    data = subset_feature(subset)
    result = label_feature(data, parent_favouring[subset], LabelConfig(seed=seed))
    assert result.label == subset, result.attempts
    assert result.converged and result.polysemantic is None
    assert result.metrics["train_errors"] == 0
    # The first attempt finds the subset or settles on the parent; then its errors on the
    # siblings are fixable (the subset's label is on its short-list), and the refinement finds
    # the subset.
    first = result.attempts[0]
    if first.label != subset:
        assert first.label == SUBSETS[subset] and first.metrics["train_fixable_errors"] >= 1
        assert result.attempts[1].overrides.get("refined") and result.attempts[1].selected
    # Without the refinement, under the paper's animal preset objective (λ_ent = λ_kl, lr
    # 0.03; the default's first attempt finds "mammal" here, issue 21), the parent wins: the
    # cases reproduce the failure.
    paper = dict(lr=0.03, lambda_ent=0.2, lambda_kl=0.2)
    plain = label_feature(data, parent_favouring[subset],
                          LabelConfig(seed=seed, refine=False, **paper))
    assert plain.label == SUBSETS[subset]


@pytest.mark.slow
def test_hierarchy_balanced_finds_the_superset_confusion_the_concept(parent_favouring):
    data = subset_feature("mammal")
    # The paper's mammal_text preset with temperature annealing; everything is trained on,
    # so the five non-mammal animals are seen. Only the sampler differs.
    common = dict(holdout_fraction=0.0, temperature_final=0.1)
    ev = parent_favouring["mammal"]
    balanced = label_feature(data, ev, LabelConfig.preset("mammal_text", **common))
    confusion = label_feature(data, ev,
                              LabelConfig.preset("mammal_text", sampler="confusion", **common))
    # Balanced batches hold a non-mammal animal once in ~30 steps; "animal" predicts the
    # rest as well as "mammal" does, and the prior prefers it.
    assert balanced.label == "animal" and balanced.converged
    # A quarter of every confusion batch is the current label's false positives.
    assert confusion.label == "mammal" and confusion.converged
    assert confusion.metrics["train_balanced_accuracy"] == 1.0
    assert balanced.metrics["train_precision"] < 1.0


def test_a_noisy_feature_still_gets_its_concept_and_pays_no_refinement(toy_evaluator):
    # 80% of the colors and 2% of every other word: the random firings are errors no label
    # on the short-list fixes, so no refinement runs and the label is the concept.
    result = label_feature(noisy_feature("color"), toy_evaluator, LabelConfig())
    assert result.label == "color" and result.polysemantic is None
    assert result.metrics["train_errors"] > 0
    assert not result.metrics.get("train_fixable_errors")
    assert not any(a.overrides.get("refined") for a in result.attempts)


@pytest.mark.slow
def test_a_polysemantic_feature_is_flagged(toy_evaluator):
    # Fires on colors and on foods: one label explains half of it. The result says so.
    result = label_feature(union_feature("color", "food"), toy_evaluator, LabelConfig())
    flag = result.polysemantic
    assert flag is not None, result.attempts
    assert set(flag.labels) == {"color", "food"} and result.label in flag.labels
    assert flag.union_balanced_accuracy >= 0.9 > max(flag.balanced_accuracy)
    assert "polysemantic" in flag.describe()
    back = type(result).from_json(result.to_json())
    assert back.polysemantic == flag
    # A feature one concept explains is not flagged.
    plain = label_feature(concept_feature("color"), toy_evaluator, LabelConfig())
    assert plain.polysemantic is None and "polysemantic" not in plain.to_dict()


@pytest.mark.parametrize("name, concept", [("animals", "animal"), ("mammals", "mammal"),
                                           ("numbers", "number")])
def test_paper_synthetic_features_with_their_presets(toy_evaluator, name, concept):
    result = label_feature(FeatureData.synthetic(name), toy_evaluator, LabelConfig.preset(name))
    assert result.label == concept and result.converged
    assert result.metrics["heldout_balanced_accuracy"] >= 0.9


def test_batched_concepts_match(toy_evaluator):
    datas = [concept_feature(c) for c in ("number", "color")]
    results = label_features_data(datas, toy_evaluator, LabelConfig(seed=0))
    assert [r.label for r in results] == ["number", "color"]


def test_split_holdout_is_stratified_and_deterministic():
    t = torch.tensor([1.0] * 10 + [0.0] * 30)
    train, held = split_holdout(t, 0.2, seed=3)
    assert len(set(train.tolist()) & set(held.tolist())) == 0
    assert len(train) + len(held) == 40
    assert int(t[held].sum()) == 2 and int((1 - t[held]).sum()) == 6
    assert torch.equal(held, split_holdout(t, 0.2, seed=3)[1])
    assert not torch.equal(held, split_holdout(t, 0.2, seed=4)[1])
    # Tiny classes: one held out, one kept for training.
    train, held = split_holdout(torch.tensor([1.0, 1.0, 0.0]), 0.2, seed=0)
    assert int(torch.tensor([1.0, 1.0, 0.0])[held].sum()) == 1 and len(train) == 2


def test_label_feature_errors(tiny_evaluator):
    dead = FeatureData.from_sentences([[("a", 0.0), (" b", 0.0)]], name="dead")
    with pytest.raises(FeatureDataError, match="no active examples"):
        label_feature(dead, tiny_evaluator)
    always = FeatureData.from_sentences([[("a", 1.0), (" b", 1.0)]], name="on")
    with pytest.raises(FeatureDataError, match="active on every example"):
        label_feature(always, tiny_evaluator)
    with pytest.raises(TypeError, match="stl.Evaluator"):
        label_feature(dead, tiny_evaluator.model)  # a bare model, not an Evaluator
    assert isinstance(tiny_evaluator, Evaluator)


@pytest.mark.slow
def test_two_token_concept_is_recovered_with_label_length_2(toy_evaluator):
    from saelens_tokenlabel.toy.features import concept_feature, label_token_ids

    ve, hicle = label_token_ids(toy_evaluator, "vehicle")
    for objective in ({}, dict(lr=0.03, lambda_ent=0.2, lambda_kl=0.2)):
        result = label_feature(concept_feature("vehicle"), toy_evaluator,
                               LabelConfig(label_length=2, restarts=(), **objective))
        assert result.label_token_ids == [ve, hicle] and result.label == "vehicle"
        assert result.converged and result.metrics["heldout_balanced_accuracy"] >= 0.9
        chosen = next(a for a in result.attempts if a.selected)
        if not objective:
            # The default objective's plain first attempt finds the pair (issue 21).
            assert chosen.attempt == 0 and len(result.attempts) == 1
    # Under the paper's animal preset objective (λ_ent = λ_kl, lr 0.03) it came from the
    # evaluator's own proposals: the plain first attempt finds no pair.
    assert "prior_rank" in chosen.overrides
    assert result.attempts[0].metrics["heldout_balanced_accuracy"] < 0.9
    # Each token alone, or the two swapped, tells vehicles from the rest no better than chance.
    from saelens_tokenlabel.descent import StepContext, score_hard_label

    ex = concept_feature("vehicle").examples()
    encoded = [toy_evaluator.encode(i.sentence, i.word) for i in ex.items]
    ctx = StepContext.build(toy_evaluator, encoded)
    ids = torch.arange(len(encoded))
    targets = torch.tensor([float(i.active) for i in ex.items])
    for label in ([ve], [hicle], [hicle, ve]):
        s = score_hard_label(ctx, ids, targets, label)[0]
        assert s["train_balanced_accuracy"] < 0.6, (label, s)
    both, right = score_hard_label(ctx, ids, targets, [ve, hicle])
    assert float(right.double().mean()) == both["train_accuracy"]
    assert both["train_balanced_accuracy"] >= 0.95


def test_a_prompt_longer_than_the_evaluator_context_is_refused_before_any_forward_pass(
        toy_evaluator, monkeypatch):
    n_ctx = toy_evaluator.n_ctx
    words = [" cat", " table"] * 1000  # a 2,000-word sentence: far past the toy's context
    long = FeatureData.from_sentences([[(w, float(w == " cat")) for w in words],
                                       [("A", 0.0), (" dog", 1.0)]], name="long")

    def forward(*a, **k):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(type(toy_evaluator.backend), "run", forward)
    with pytest.raises(PromptTooLongError) as err:
        label_feature(long, toy_evaluator, LabelConfig(steps=2))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("Feature 'long': the rating prompt of the example")
    assert f"longer than the evaluator's context of {n_ctx}" in msg
    assert "window_before" in msg and "window_after" in msg
