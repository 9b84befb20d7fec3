"""Fixable errors and the refinement: the short-list, the error check, the refinement's job."""

from __future__ import annotations

import math

import pytest
import torch

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.descent import StepContext, score_hard_label
from saelens_tokenlabel.descent.labeler import feature_jobs
from saelens_tokenlabel.descent.refine import (
    check_errors,
    hint_logits,
    refine_config,
    refine_job,
    short_list,
)
from saelens_tokenlabel.descent.sampler import ConfusionSampler
from saelens_tokenlabel.descent.soft_label import label_log_probs
from saelens_tokenlabel.records.result import Trajectory
from saelens_tokenlabel.toy import label_token_ids, noisy_feature, subset_feature

from .common import siblings_only_in_validation


def _trajectory(rows: list[list[tuple[int, float]]]) -> Trajectory:
    t = Trajectory()
    for n, row in enumerate(rows):
        t.step.append(n)
        t.top_ids.append([[i for i, _ in row]])
        t.top_probs.append([[p for _, p in row]])
    return t


def test_short_list_ranks_other_tokens_by_their_peak_probability():
    t = _trajectory([[(5, 0.4), (7, 0.3), (9, 0.2)], [(5, 0.9), (9, 0.05), (7, 0.01)]])
    assert short_list(t, [5], 5) == [[7], [9]]  # 7 peaked at 0.3, 9 at 0.2; 5 is the label
    assert short_list(t, [5], 1) == [[7]]
    # Two slots: each alternative changes one slot.
    two = Trajectory(step=[0], top_ids=[[[1, 2], [3, 4]]], top_probs=[[[0.6, 0.3], [0.8, 0.1]]])
    assert short_list(two, [1, 3], 4) == [[2, 3], [1, 4]]


def test_hint_logits_give_the_tokens_half_the_mass_together():
    for ids in ([[3]], [[3, 8]], [[3, 8, 11]]):
        p = torch.softmax(hint_logits(ids, 50, None), -1)[0]
        assert math.isclose(float(p[ids[0]].sum()), 0.5, rel_tol=1e-6)
        assert torch.allclose(p[ids[0]], p[ids[0][0]].expand(len(ids[0])))


def _job(evaluator, data, config):
    encoded, (job,) = feature_jobs([data.prepare(config)], evaluator, config)
    ctx = StepContext.build(evaluator, encoded, config.performance,
                            evaluator.label_vocab(config))
    return ctx, job


def test_a_parents_errors_on_the_siblings_are_fixable_by_the_subset(toy_evaluator):
    config = LabelConfig(holdout_fraction=0.0, validation_fraction=0.0)
    ctx, job = _job(toy_evaluator, subset_feature("mammal"), config)
    (animal,), (mammal,) = (label_token_ids(toy_evaluator, c) for c in ("animal", "mammal"))
    _, right = score_hard_label(ctx, job.example_ids, job.targets, [animal])
    siblings = {w for w, r in zip(job.words, right.tolist(), strict=True) if not r}
    assert len(siblings) == 5  # "animal" says 1 on the five non-mammal animals, and only there
    # The descent weighed "mammal" (and some noise tokens that say 0 to everything).
    traj = _trajectory([[(animal, 0.5), (mammal, 0.3), (7, 0.1), (9, 0.05)]])
    check = check_errors(ctx, job, [animal], right, traj, config)
    assert check.fixers == [[mammal]]  # 7 and 9 "fix" the siblings but lose the mammals
    assert torch.equal(check.fixable, ~right) and not check.irreducible.any()
    refined = refine_job(ctx, job, [animal], right, check)
    p0 = label_log_probs(refined.init_logits[None], ctx.vocab_mask.cpu())[0, 0].exp()
    assert math.isclose(float(p0[animal] + p0[mammal]), 0.5, rel_tol=1e-5)
    assert torch.equal(refined.error_eligible, torch.ones_like(right))
    # The confusion sampler's error bucket is the siblings, for the whole refinement.
    sampler = ConfusionSampler(refined.targets, 10, 0, refined.error_eligible)
    sampler.freeze(refined.prediction)
    assert sampler.frozen and sampler.counts["fp"] == 5
    picks = torch.cat([next(sampler) for _ in range(4)])
    assert sum(not right[i] for i in picks.tolist()) == 12  # 3 of every 10 rows
    r_cfg = refine_config(config, config.refine_overrides)
    assert r_cfg.sampler == "confusion" and r_cfg.lr == config.refine_overrides["lr"]


def test_random_firings_are_irreducible(toy_evaluator):
    config = LabelConfig(holdout_fraction=0.0, validation_fraction=0.0)
    ctx, job = _job(toy_evaluator, noisy_feature("color"), config)
    (color,) = label_token_ids(toy_evaluator, "color")
    _, right = score_hard_label(ctx, job.example_ids, job.targets, [color])
    assert (~right).sum() >= 5
    others = [label_token_ids(toy_evaluator, c)[0] for c in ("food", "number", "animal")]
    traj = _trajectory([[(color, 0.6)] + [(o, 0.1) for o in others]])
    check = check_errors(ctx, job, [color], right, traj, config)
    assert check.n_fixable == 0 and not check.fixers
    assert torch.equal(check.irreducible, ~right)
    # Irreducible errors stay out of the error buckets.
    sampler = ConfusionSampler(job.targets, 10, 0, ~check.irreducible)
    sampler.update(torch.where(right, job.targets > 0.5, job.targets <= 0.5))
    assert sampler.counts["fp"] == sampler.counts["fn"] == 0


def test_no_errors_cost_nothing(toy_evaluator, monkeypatch):
    config = LabelConfig(holdout_fraction=0.0, validation_fraction=0.0)
    ctx, job = _job(toy_evaluator, subset_feature("mammal"), config)

    def boom(*a, **k):
        raise AssertionError("no rating may run without errors")

    monkeypatch.setattr("saelens_tokenlabel.descent.refine.hard_label_margins", boom)
    check = check_errors(ctx, job, [1], torch.ones(len(job.targets), dtype=torch.bool),
                         Trajectory(), config)
    assert check.n_fixable == 0 and not check.irreducible.any()
    # Nor without errors on either split.
    config = LabelConfig()
    ctx, job = _job(toy_evaluator, subset_feature("mammal"), config)
    check = check_errors(ctx, job, [1], torch.ones(len(job.targets), dtype=torch.bool),
                         Trajectory(), config,
                         torch.ones(len(job.validation_ids), dtype=torch.bool))
    assert not check.any_fixable and len(check.validation_fixable) == len(job.validation_ids)


def test_validation_errors_are_checked_and_join_the_refinement(toy_evaluator):
    # The siblings are only in validation: the parent rates every training example right,
    # and its validation errors are what a short-list label fixes.
    data, seed, siblings = siblings_only_in_validation()
    config = LabelConfig(seed=seed)
    ctx, job = _job(toy_evaluator, data, config)
    (animal,), (mammal,) = (label_token_ids(toy_evaluator, c) for c in ("animal", "mammal"))
    _, right = score_hard_label(ctx, job.example_ids, job.targets, [animal])
    _, val_right = score_hard_label(ctx, job.validation_ids, job.validation_targets, [animal])
    assert right.all() and int((~val_right).sum()) == len(siblings) == 5
    traj = _trajectory([[(animal, 0.5), (mammal, 0.3), (7, 0.1), (9, 0.05)]])
    check = check_errors(ctx, job, [animal], right, traj, config, val_right)
    assert check.fixers == [[mammal]] and check.n_fixable == 0
    assert torch.equal(check.validation_fixable, ~val_right) and check.any_fixable
    # Training only (the old check): nothing to fix, no refinement.
    assert not check_errors(ctx, job, [animal], right, traj, config).any_fixable
    refined = refine_job(ctx, job, [animal], right, check)
    n = len(job.example_ids)
    assert len(refined.example_ids) == len(refined.targets) == n + 5
    assert torch.equal(refined.example_ids[n:], job.validation_ids[~val_right])
    assert not (refined.targets[n:] > 0.5).any()  # siblings: inactive, rated "1" by "animal"
    assert refined.prediction[n:].all() and refined.error_eligible.all()
    # The held-out split is not touched.
    assert torch.equal(refined.heldout_ids, job.heldout_ids)
    assert not set(refined.example_ids.tolist()) & set(job.heldout_ids.tolist())
    sampler = ConfusionSampler(refined.targets, 10, 0, refined.error_eligible)
    sampler.freeze(refined.prediction)
    assert sampler.counts["fp"] == 5 and sampler.counts["fn"] == 0


@pytest.mark.parametrize("bad", [{"threshold": 1.0}, {"seed": "x", "lr": -1}])
def test_refine_overrides_are_checked(bad):
    from saelens_tokenlabel.records.serial import ConfigError

    with pytest.raises(ConfigError):
        LabelConfig(refine_overrides=bad)
