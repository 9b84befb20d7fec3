"""The step engine: gradients (finite differences, float64), cached = full prompt, passes of
fewer rows = one pass, and the engine's step = the paper's loss written out."""

from __future__ import annotations

import torch

from saelens_tokenlabel import FeatureData, LabelConfig, label_feature
from saelens_tokenlabel.descent import Batch, StepContext, step
from saelens_tokenlabel.descent.loss import LossWeights, accuracy_loss, label_loss
from saelens_tokenlabel.descent.soft_label import label_embeddings, label_log_probs
from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    full_prompt_logits,
)

from ..builders import exact
from .common import SENTS, cfg, same_losses

ROWS = [0, 1, 2, 2]
ROW_FEATURE = [0, 0, 1, 1]
TARGETS = [1.0, 1.0, 0.0, 1.0]


def _examples(ev):
    return [ev.encode("The cat chased the mouse.", "cat"), ev.encode("A dog", "dog"),
            ev.encode("The bird sang a song", "song")]


def _loss_fn(ev, use_cache, mask):
    exs = _examples(ev)
    cache = PrefixCache(ev, exs)
    rows = torch.tensor(ROWS)
    row_feature = torch.tensor(ROW_FEATURE)
    targets = torch.tensor(TARGETS, dtype=torch.float64)

    def loss(v):
        log_p = label_log_probs(v, mask)
        e = label_embeddings(log_p.exp(), ev.model.W_E)[row_feature]
        if use_cache:
            logits = cached_logits(ev, cache, rows, e)
        else:
            logits = full_prompt_logits(ev, [exs[i] for i in rows], e)
        acc = accuracy_loss(logits, targets, ev.yes_id, ev.no_id)
        counts = torch.bincount(row_feature, minlength=2)
        terms = label_loss(log_p, row_feature, acc, cache.log_q[rows], counts,
                       LossWeights(1.0, 0.3, 0.2))
        return terms.total.sum()

    return loss


def _v(ev, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, ev.d_vocab, generator=g, dtype=torch.float64)


def test_gradient_matches_finite_differences(any_evaluator):
    ev = any_evaluator
    mask = ev.vocab_mask()
    loss = _loss_fn(ev, use_cache=True, mask=mask)
    v = _v(ev).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(v), v)
    assert torch.isfinite(grad).all()
    assert (grad[:, :, ~mask] == 0).all()  # masked tokens get no gradient
    g = torch.Generator().manual_seed(1)
    # A bridge's float32 attention softmax (`BRIDGE_ATOL`) is noise that a 1e-6 step would
    # amplify past the gradient; a larger step keeps the truncation error below the check.
    eps, rtol = (1e-2, 1e-3) if ev.backend.kind == "bridge" else (1e-6, 1e-6)
    for _ in range(4):
        d = torch.randn(v.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = (loss(v + eps * d) - loss(v - eps * d)) / (2 * eps)
        torch.testing.assert_close((grad * d).sum(), fd, rtol=rtol, atol=1e-8)


def test_cached_gradient_equals_uncached(any_evaluator):
    ev = any_evaluator
    v = _v(ev, seed=3).requires_grad_(True)
    (g_cached,) = torch.autograd.grad(_loss_fn(ev, True, None)(v), v)
    (g_full,) = torch.autograd.grad(_loss_fn(ev, False, None)(v), v)
    torch.testing.assert_close(g_cached, g_full, **exact(ev, 1e-12))


def test_only_v_gets_gradient(any_evaluator):
    ev = any_evaluator
    v = _v(ev).requires_grad_(True)
    _loss_fn(ev, True, None)(v).backward()
    assert v.grad is not None
    assert all(p.grad is None for p in ev.model.parameters())


def test_engine_step_is_the_loss_written_out(tiny_evaluator):
    # The engine's step (what attempts and the benchmark run) gives the gradient of the loss
    # checked above against finite differences, in one pass or in passes of one row.
    ev = tiny_evaluator
    mask = ev.vocab_mask()
    v = _v(ev, seed=5).requires_grad_(True)
    (want,) = torch.autograd.grad(_loss_fn(ev, True, mask)(v), v)
    ctx = StepContext.build(ev, _examples(ev), vocab_mask=mask)
    batch = Batch(torch.tensor(ROWS), torch.tensor(ROW_FEATURE),
                  torch.tensor(TARGETS, dtype=torch.float64), live=[0, 1])
    config = LabelConfig(lambda_acc=1.0, lambda_ent=0.3, lambda_kl=0.2)
    for rows_per_pass in (None, 1):
        v.grad = None
        step(ctx, v, batch, config, rows_per_pass)
        torch.testing.assert_close(v.grad, want, rtol=1e-9, atol=1e-12)


def test_cached_run_equals_uncached_run(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, cfg({"use_cache": True}))
    b = label_feature(data, tiny_evaluator, cfg({"use_cache": False}))
    assert a.label_token_ids == b.label_token_ids
    assert a.trajectory.top_ids == b.trajectory.top_ids
    same_losses(a, b)


def test_micro_batches_give_the_same_run(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, cfg())
    b = label_feature(data, tiny_evaluator, cfg({"max_rows_per_pass": 3}))
    assert a.trajectory.top_ids == b.trajectory.top_ids
    same_losses(a, b)


def test_balanced_and_confusion_samplers_both_run_exactly(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    for sampler in ("balanced", "confusion"):
        a = label_feature(data, tiny_evaluator, cfg({"use_cache": True}, sampler=sampler))
        b = label_feature(data, tiny_evaluator, cfg({"use_cache": False}, sampler=sampler))
        assert a.trajectory.top_ids == b.trajectory.top_ids
        same_losses(a, b)
