"""Batch samplers: the paper's balanced one and the confusion-stratified one."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel.descent.sampler import BalancedSampler, ConfusionSampler

TARGETS = torch.tensor([1.0] * 6 + [0.0] * 30)


def test_confusion_sampler_draws_like_balanced_before_any_classification():
    a, b = BalancedSampler(TARGETS, 10, seed=3), ConfusionSampler(TARGETS, 10, seed=3)
    for _ in range(7):
        assert torch.equal(next(a), next(b))


def test_confusion_sampler_draws_a_quarter_from_each_bucket():
    s = ConfusionSampler(TARGETS, 8, seed=0)
    pred = torch.zeros(36, dtype=torch.bool)
    pred[:3] = True  # TP 0-2, FN 3-5
    pred[6:8] = True  # FP 6-7, TN 8-35
    s.update(pred)
    assert s.counts == {"tp": 3, "fn": 3, "fp": 2, "tn": 28}
    seen_fp = 0
    for _ in range(20):
        batch = next(s)
        assert len(batch) == 8
        assert int((TARGETS[batch] > 0.5).sum()) == 4  # still half active
        assert int((batch < 3).sum()) == 2 and int(((batch >= 3) & (batch < 6)).sum()) == 2
        fp = int(((batch >= 6) & (batch < 8)).sum())
        assert fp == 2
        seen_fp += fp
    # The two false positives, 2/30 of the inactive examples, are in every batch.
    assert seen_fp == 40


def test_confusion_sampler_falls_back_within_the_class():
    s = ConfusionSampler(TARGETS, 10, seed=0)
    s.update(TARGETS > 0.5)  # a perfect label: no FN, no FP
    for _ in range(5):
        batch = next(s)
        assert int((TARGETS[batch] > 0.5).sum()) == 5 and len(batch) == 10
    s.update(torch.zeros(36, dtype=torch.bool))  # says "0" everywhere: only FN and TN
    assert s.counts["tp"] == 0 and s.counts["fp"] == 0
    assert int((TARGETS[next(s)] > 0.5).sum()) == 5


def test_odd_share_goes_to_the_mistakes():
    s = ConfusionSampler(TARGETS, 6, seed=0)
    pred = torch.zeros(36, dtype=torch.bool)
    pred[:3] = True
    pred[6:10] = True
    s.update(pred)
    batch = next(s)  # 3 active: 1 TP + 2 FN; 3 inactive: 1 TN + 2 FP
    assert int((batch < 3).sum()) == 1 and int(((batch >= 3) & (batch < 6)).sum()) == 2
    assert int(((batch >= 6) & (batch < 10)).sum()) == 2


@pytest.mark.parametrize("cls", [BalancedSampler, ConfusionSampler])
def test_samplers_need_both_classes(cls):
    with pytest.raises(ValueError, match="both active and inactive"):
        cls(torch.ones(5), 4, seed=0)
