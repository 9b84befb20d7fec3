"""Verifying proposed labels on prepared features (the evaluator's side of amortised labels):
the right label is accepted and scored like a descent's, a wrong one is rejected with its
scores, and the batch's outcome is the same whichever features share it."""

from __future__ import annotations

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.descent.verify import VerifyBatch, accepts, verify_batch
from saelens_tokenlabel.records.data import PreparedFeature
from saelens_tokenlabel.toy import concept_feature, label_token_ids


def _prepared(concept: str, name: int, config: LabelConfig) -> PreparedFeature:
    """The toy feature of `concept`, prepared, under the feature index `name`."""
    return PreparedFeature(name, concept_feature(concept).prepare(config).examples)


def test_the_right_label_is_accepted_and_a_wrong_one_rejected_with_its_scores(toy_evaluator):
    config = LabelConfig()
    ids = {c: tuple(label_token_ids(toy_evaluator, c)) for c in ("animal", "color", "food")}
    animals, colors = _prepared("animal", 7, config), _prepared("color", 9, config)
    batch = VerifyBatch([animals, colors], {7: ((ids["color"], 0.6), (ids["animal"], 0.4)),
                                           9: ((ids["food"], 1.0),)}, config.success_score)
    assert batch.features == [7, 9]
    checked = verify_batch(batch, toy_evaluator, config)
    (ok,) = checked.accepted
    # The examples choose: the map's second candidate is the one accepted.
    assert (ok.feature, ok.label, ok.method, ok.steps) == (7, "animal", "amortised", 0)
    assert ok.probability == 0.4 == ok.metrics["amortised_share"]
    assert accepts(ok.metrics, config.success_score) and ok.n_heldout > 0
    assert "heldout_balanced_accuracy" in ok.metrics and ok.verdict is not None
    assert list(checked.tried) == [9]
    (food,) = checked.tried[9]
    assert (food.attempt, food.label, food.steps, food.label_token_ids) == \
        (-1, "food", 0, list(ids["food"]))
    assert not accepts(food.metrics, config.success_score) and food.rejected
    # A feature's outcome does not depend on the others in its batch.
    alone = verify_batch(VerifyBatch([animals], {7: batch.candidates[7]},
                                     config.success_score), toy_evaluator, config)
    assert alone.accepted[0].to_dict() == ok.to_dict()


def test_nothing_to_verify_is_an_empty_outcome(toy_evaluator):
    checked = verify_batch(VerifyBatch([], {}, 0.9), toy_evaluator, LabelConfig())
    assert checked.accepted == [] and checked.tried == {}
