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
from saelens_tokenlabel.labeler import split_holdout
from saelens_tokenlabel.toy.lexicon import CONCEPTS, OBJECTS

TEMPLATES = ("The {w} was here.", "I saw the {w} today.", "A {w} and a {o} stood there.")


def planted_feature(concept: str) -> FeatureData:
    """Toy-world sentences; the feature fires on exactly the words of `concept`."""
    members = set(CONCEPTS[concept])
    words = sorted({w for ws in CONCEPTS.values() for w in ws} | set(OBJECTS))
    sentences = []
    for i, w in enumerate(words):
        tpl = TEMPLATES[i % len(TEMPLATES)]
        o = OBJECTS[i % len(OBJECTS)]
        text = tpl.format(w=w, o=o)
        # Whitespace-led word tokens, punctuation on its own.
        toks = text.replace(".", " .").split(" ")
        sent = []
        for j, t in enumerate(toks):
            piece = t if j == 0 or t == "." else " " + t
            sent.append((piece, 1.0 if t in members else 0.0))
        sentences.append(sent)
    return FeatureData.from_sentences(sentences, name=concept)


@pytest.mark.parametrize("concept", sorted(CONCEPTS))
def test_recovers_planted_concept(toy_evaluator, concept):
    # mammal ⊂ animal: with the default λ_ent a mammal/animal mixture also predicts perfectly,
    # so the paper's mammal preset (higher lr and λ_ent, Table 1) is needed to converge.
    config = LabelConfig.preset("mammals") if concept == "mammal" else LabelConfig()
    result = label_feature(planted_feature(concept), toy_evaluator, config)
    assert result.label == concept, result.trajectory.tokens
    assert result.converged and result.probability >= 0.9
    assert result.metrics["heldout_balanced_accuracy"] >= 0.9


@pytest.mark.parametrize("name, concept", [("animals", "animal"), ("mammals", "mammal"),
                                           ("numbers", "number")])
def test_paper_synthetic_features_with_their_presets(toy_evaluator, name, concept):
    result = label_feature(FeatureData.synthetic(name), toy_evaluator, LabelConfig.preset(name))
    assert result.label == concept and result.converged
    assert result.metrics["heldout_balanced_accuracy"] >= 0.9


def test_batched_concepts_match(toy_evaluator):
    datas = [planted_feature(c) for c in ("number", "color")]
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
