"""Hard-label ratings remembered within a labeling call (`ratings.RatingMemo`): the same
ratings and losses as computing each afresh, each (label, example) computed once, the memory
bounded, and a whole search unchanged by it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from saelens_tokenlabel import FeatureData
from saelens_tokenlabel.descent import StepContext, hard_label_margins
from saelens_tokenlabel.descent.labeler import feature_jobs
from saelens_tokenlabel.descent.loss import accuracy_loss
from saelens_tokenlabel.descent.ratings import RatingMemo
from saelens_tokenlabel.descent.search import optimize_labels
from saelens_tokenlabel.evaluator.forward import hard_prompt_logits

from ..evaluator.test_forward import SENTENCES
from .common import SENTS, cfg


@pytest.fixture
def ctx(tiny_evaluator) -> StepContext:
    exs = [tiny_evaluator.encode(s, w) for s, w in SENTENCES]
    return StepContext.build(tiny_evaluator, exs)


@pytest.mark.parametrize("prediction", ["two_way", "full_vocab"])
def test_remembered_ratings_are_the_labels_own(ctx, prediction):
    ev = ctx.evaluator
    rows = torch.tensor([0, 1, 2, 3, 2, 0])
    labels = torch.tensor([[5], [5], [5], [9], [9], [5]])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    first = hard_label_margins(ctx, rows, labels, targets, prediction)
    # (0, [5]) is asked for twice in the one call: computed once.
    assert ctx.ratings.computed == 5 and ctx.ratings.reused == 1
    again = hard_label_margins(ctx, rows.flip(0), labels.flip(0), targets.flip(0), prediction)
    assert ctx.ratings.computed == 5 and ctx.ratings.reused == 7
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b.flip(0))  # looked up: the very same numbers
    # Each is the label written into the prompt as tokens, rated by the whole prompt.
    for i, (r, lab) in enumerate(zip(rows.tolist(), labels.tolist(), strict=True)):
        logits = hard_prompt_logits(ev, [ctx.encoded[r]], lab)
        want = logits[0, ev.yes_id] - logits[0, ev.no_id]
        loss = accuracy_loss(logits, targets[i:i + 1].double(), ev.yes_id, ev.no_id, prediction)
        torch.testing.assert_close(first[0][i], want, rtol=0, atol=1e-12)
        torch.testing.assert_close(first[1][i], loss[0], rtol=0, atol=1e-12)
    # Without the memory: the same values, every row computed.
    fresh = dataclasses.replace(ctx)
    fresh.ratings.enabled = False
    plain = hard_label_margins(fresh, rows, labels, targets, prediction)
    for a, b in zip(first, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert fresh.ratings.computed == len(rows) and fresh.ratings.reused == 0


def test_modes_are_remembered_apart_and_new_rows_computed(ctx):
    hard_label_margins(ctx, torch.tensor([0, 1]), [7])
    assert ctx.ratings.computed == 2
    # The full-vocabulary prediction unembeds every token: its own ratings.
    hard_label_margins(ctx, torch.tensor([0, 1]), [7], torch.tensor([1.0, 0.0]), "full_vocab")
    assert ctx.ratings.computed == 4
    # Two rows known, two new; a two-slot label is another label.
    hard_label_margins(ctx, torch.tensor([3, 1, 2, 0]), [7])
    assert ctx.ratings.computed == 6 and ctx.ratings.reused == 2
    hard_label_margins(ctx, torch.tensor([0]), [7, 7])
    assert ctx.ratings.computed == 7


def test_the_memory_is_bounded_least_recently_used_first(ctx):
    memo = RatingMemo(max_rows=6)
    calls = []

    def compute(rows, labels):
        calls.append(len(rows))
        return (rows * 10 + labels[:, 0]).double()[:, None]

    rows = torch.arange(3)
    for label in (1, 2, 1, 3):  # 1 used again before 3 comes: 2 is the one to go
        memo.rate("two_way", rows, torch.full((3, 1), label), compute)
    assert calls == [3, 3, 3] and memo._n_rows == 6
    out = memo.rate("two_way", rows, torch.tensor([[1], [3], [2]]), compute)
    assert calls == [3, 3, 3, 1]  # only (2, label 2) again
    assert out[:, 0].tolist() == [1.0, 13.0, 22.0]


def test_a_search_is_the_same_with_and_without_the_memory(tiny_evaluator):
    # Restarts (one confusion-stratified), each converged label's error check and the
    # polysemantic check, all run: the same attempts, labels and metrics, and ratings reused
    # along the way.
    data = FeatureData.from_sentences(SENTS)
    config = cfg(restarts=({"sampler": "confusion", "lr": 0.3, "seed": 1},
                           {"lr": 0.2, "seed": 2}), success_score=1.0, refine=True,
                 polysemantic_check=True, holdout_fraction=0.25, validation_fraction=0.25,
                 steps=60, lr=0.5, lambda_ent=5.0, convergence_patience=3)
    encoded, jobs = feature_jobs([data.prepare(config)], tiny_evaluator, config)
    results = []
    for reuse in (True, False):
        ctx = StepContext.build(tiny_evaluator, encoded, config.performance,
                                tiny_evaluator.label_vocab(config))
        ctx.ratings.enabled = reuse
        results.append(optimize_labels(ctx, jobs, config)[0])
        if reuse:
            assert ctx.ratings.reused > 0
    a, b = results
    assert len(a.attempts) == len(b.attempts) >= 3  # both restarts ran (and any refinement)
    assert all(x.converged for x in a.attempts)
    assert all("train_fixable_errors" in x.metrics for x in a.attempts)
    assert a.label_token_ids == b.label_token_ids and a.verdict == b.verdict
    for x, y in zip([a, *a.attempts], [b, *b.attempts], strict=True):
        assert x.label_token_ids == y.label_token_ids and sorted(x.metrics) == sorted(y.metrics)
        for k in x.metrics:
            assert x.metrics[k] == pytest.approx(y.metrics[k], rel=1e-12, abs=1e-12), k
