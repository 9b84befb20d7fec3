"""End to end: the trained toy evaluator, a feature planted on a concept's words, and
`label_feature` must find the concept's token."""

from __future__ import annotations

import random

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
from saelens_tokenlabel.labeler import split_holdout
from saelens_tokenlabel.toy.features import concept_feature
from saelens_tokenlabel.toy.lexicon import (
    COLORS,
    CONCEPTS,
    FOODS,
    MAMMALS,
    NON_MAMMAL_ANIMALS,
    OBJECTS,
)


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




HIERARCHY_TEMPLATES = ("A {w} saw a {o}.", "A {w} and a {o}.")
# Objects the toy evaluator rates "0" under both labels: the test is about the hierarchy, not
# about the evaluator's few mistakes on other words.
HIERARCHY_OBJECTS = tuple(o for o in OBJECTS if o not in ("pen", "stone", "river"))


def hierarchy_feature(n_rare: int = 1) -> FeatureData:
    """A mammal feature (A) in text where animals that are not mammals (B outside A) are rare:
    every mammal twice, every object, color and food once, and `n_rare` other animals."""
    rng = random.Random(0)

    def sentence(word, tpl, active):
        text = tpl.format(w=word, o=rng.choice(HIERARCHY_OBJECTS))
        pieces = text.replace(".", " .").split(" ")
        return [(p if j == 0 or p == "." else " " + p, 1.0 if p == word and active else 0.0)
                for j, p in enumerate(pieces)]

    n = len(HIERARCHY_TEMPLATES)
    sents = [sentence(m, HIERARCHY_TEMPLATES[(i + k) % n], True)
             for i, m in enumerate(MAMMALS) for k in range(2)]
    sents += [sentence(w, HIERARCHY_TEMPLATES[i % n], False)
              for i, w in enumerate(HIERARCHY_OBJECTS + COLORS + FOODS)]
    sents += [sentence(w, HIERARCHY_TEMPLATES[0], False) for w in NON_MAMMAL_ANIMALS[:n_rare]]
    return FeatureData.from_sentences(sents, name="mammal-only")


@pytest.mark.slow
def test_hierarchy_balanced_finds_the_superset_confusion_the_concept(toy_evaluator):
    data = hierarchy_feature(n_rare=3)
    # The paper's mammal_text preset with temperature annealing and a prior (KL) weight of
    # 0.4 that favours the evaluator's likelier label, "animal" (with this toy evaluator the
    # paper's 0.2 lets both samplers find "mammal"). Everything is trained on: the three
    # non-mammal animals must be seen. Only the sampler differs.
    common = dict(holdout_fraction=0.0, temperature_final=0.1, lambda_kl=0.4)
    balanced = label_feature(data, toy_evaluator, LabelConfig.preset("mammal_text", **common))
    confusion = label_feature(data, toy_evaluator,
                              LabelConfig.preset("mammal_text", sampler="confusion", **common))
    # Balanced batches hold a non-mammal animal once in ~30 steps; "animal" predicts the
    # rest as well as "mammal" does, and the prior prefers it.
    assert balanced.label == "animal" and balanced.converged
    # A quarter of every confusion batch is the current label's false positives.
    assert confusion.label == "mammal" and confusion.converged
    assert confusion.metrics["train_balanced_accuracy"] == 1.0
    assert balanced.metrics["train_precision"] < 1.0


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
    result = label_feature(concept_feature("vehicle"), toy_evaluator,
                           LabelConfig(label_length=2, restarts=()))
    assert result.label_token_ids == [ve, hicle] and result.label == "vehicle"
    assert result.converged and result.metrics["heldout_balanced_accuracy"] >= 0.9
    # It came from the evaluator's own proposals: the plain first attempt finds no pair.
    chosen = next(a for a in result.attempts if a.selected)
    assert "prior_rank" in chosen.overrides
    assert result.attempts[0].metrics["heldout_balanced_accuracy"] < 0.9
    # Each token alone, or the two swapped, tells vehicles from the rest no better than chance.
    from saelens_tokenlabel.optimize import StepContext, score_hard_label

    ex = concept_feature("vehicle").examples()
    encoded = [toy_evaluator.encode(i.sentence, i.word) for i in ex.items]
    ctx = StepContext.build(toy_evaluator, encoded)
    ids = torch.arange(len(encoded))
    targets = torch.tensor([float(i.active) for i in ex.items])
    for label in ([ve], [hicle], [hicle, ve]):
        s = score_hard_label(ctx, ids, targets, label)
        assert s["train_balanced_accuracy"] < 0.6, (label, s)
    both = score_hard_label(ctx, ids, targets, [ve, hicle])
    assert both["train_balanced_accuracy"] >= 0.95
