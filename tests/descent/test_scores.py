"""Detection scores of a hard label: exact on hand-made margins, and on planted toy features
a perfect label scores 1.0, a wrong one about 0.5."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel.descent import StepContext, score_hard_label
from saelens_tokenlabel.descent.scores import auroc, detection_scores
from saelens_tokenlabel.toy.features import concept_feature


def test_detection_scores_by_hand():
    margins = torch.tensor([2.0, 1.0, -1.0, 0.5, -3.0, -2.0])
    targets = torch.tensor([True, True, True, False, False, False])
    s = detection_scores(margins, targets, prefix="x_")
    # TP 2, FN 1, FP 1, TN 2
    assert s["x_accuracy"] == pytest.approx(4 / 6)
    assert s["x_recall"] == pytest.approx(2 / 3) and s["x_precision"] == pytest.approx(2 / 3)
    assert s["x_balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert s["x_f1"] == pytest.approx(2 / 3)
    assert s["x_auroc"] == pytest.approx(8 / 9)  # 8 of the 9 (pos, neg) pairs ordered
    assert detection_scores(margins, torch.ones(6, dtype=torch.bool))["auroc"] is None
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([True, False])) == 0.5  # a tie


@pytest.mark.parametrize("concept", ["color", "number"])
def test_perfect_label_scores_one_wrong_label_about_half(toy_evaluator, concept):
    ex = concept_feature(concept).examples()
    encoded = [toy_evaluator.encode(i.sentence, i.word) for i in ex.items]
    ctx = StepContext.build(toy_evaluator, encoded)
    ids = torch.arange(len(encoded))
    targets = torch.tensor([float(i.active) for i in ex.items])

    def score(label: str) -> dict:
        label_ids = toy_evaluator.tokenizer(label, add_special_tokens=False)["input_ids"]
        assert len(label_ids) == 1
        return score_hard_label(ctx, ids, targets, label_ids, prefix="")[0]

    right = score(concept)
    assert right["balanced_accuracy"] == 1.0 and right["f1"] == 1.0 and right["auroc"] == 1.0
    for wrong in ("food", "book"):  # another concept; a word that is no concept
        s = score(wrong)
        assert abs(s["balanced_accuracy"] - 0.5) < 0.06, (wrong, s)
        assert s["recall"] == 0.0
