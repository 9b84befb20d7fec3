"""The toy world's planted features, and the trained toy evaluator's two-token concept: only
the exact pair "ve" + "hicle" in two label slots says "1", and only on vehicles."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel.evaluator.forward import hard_prompt_logits
from saelens_tokenlabel.toy import (
    CONCEPTS,
    TWO_TOKEN_CONCEPTS,
    VEHICLE_PIECES,
    VEHICLES,
    all_concepts,
    concept_feature,
    label_token_ids,
)


@pytest.mark.parametrize("concept", sorted(all_concepts()))
def test_concept_feature_fires_on_exactly_the_members(concept):
    ex = concept_feature(concept).examples()
    members = set(all_concepts()[concept])
    assert {e.word for e in ex.items if e.active} == members
    assert not any(e.word in members for e in ex.items if not e.active)
    with pytest.raises(KeyError, match="No toy concept 'vehicles'"):
        concept_feature("vehicles")


def test_label_token_ids(toy_evaluator):
    tok = toy_evaluator.tokenizer
    for c in CONCEPTS:
        assert len(label_token_ids(toy_evaluator, c)) == 1
    pair = label_token_ids(toy_evaluator, "vehicle")
    assert tuple(tok.convert_ids_to_tokens(pair)) == VEHICLE_PIECES
    assert not set(pair) & {label_token_ids(toy_evaluator, c)[0] for c in CONCEPTS}
    assert set(TWO_TOKEN_CONCEPTS) == {"vehicle"}


def _p_yes(evaluator, words: list[str], label_ids: list[int]) -> torch.Tensor:
    enc = [evaluator.encode(f"The {w} was here.", w) for w in words]
    with torch.no_grad():
        logits = hard_prompt_logits(evaluator, enc, label_ids)
    two = logits[:, [evaluator.yes_id, evaluator.no_id]]
    return torch.softmax(two, -1)[:, 0]


def test_toy_evaluator_reads_the_two_token_label_as_a_pair(toy_evaluator):
    ve, hicle = label_token_ids(toy_evaluator, "vehicle")
    animal = label_token_ids(toy_evaluator, "animal")[0]
    vehicles = list(VEHICLES[:6])
    others = ["cat", "bird", "seven", "red", "bread", "book"]
    assert (_p_yes(toy_evaluator, vehicles, [ve, hicle]) > 0.9).all()
    assert (_p_yes(toy_evaluator, others, [ve, hicle]) < 0.1).all()
    for wrong in ([ve], [hicle], [hicle, ve], [ve, animal], [animal, hicle]):
        # rated "0" (a piece alone keeps a little of the pair's signal: P(yes) up to ~0.2)
        assert (_p_yes(toy_evaluator, vehicles, wrong) < 0.5).all(), wrong
