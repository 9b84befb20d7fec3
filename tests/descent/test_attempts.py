"""One attempt for many features: determinism, batched = solo, convergence bookkeeping, warm
starts, and halving the pass on out-of-memory (simulated through `StepContext.pass_logits`)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from saelens_tokenlabel import FeatureData, LabelConfig, label_feature, label_features_data
from saelens_tokenlabel.descent import (
    Batch,
    StepContext,
    optimize_labels,
    prompt_logits,
    step,
    step_halving_on_oom,
)
from saelens_tokenlabel.descent.labeler import feature_jobs

from .common import SENTS, cfg, same_losses

LOGGER = "saelens_tokenlabel.descent"


def test_same_seed_same_label_and_trajectory(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, cfg(seed=7, init_std=0.5))
    b = label_feature(data, tiny_evaluator, cfg(seed=7, init_std=0.5))
    assert a.to_dict() == b.to_dict()
    c = label_feature(data, tiny_evaluator, cfg(seed=8, init_std=0.5))
    assert c.trajectory.top_ids != a.trajectory.top_ids


def test_batched_features_equal_solo_runs(tiny_evaluator):
    d1 = FeatureData.from_sentences(SENTS, name="f1")
    flipped = [[(t, 1.0 - min(a, 1.0)) for t, a in s] for s in SENTS]
    d2 = FeatureData.from_sentences(flipped, name="f2")
    together = label_features_data([d1, d2], tiny_evaluator, cfg())
    for data, res in zip((d1, d2), together, strict=True):
        solo = label_feature(data, tiny_evaluator, cfg())
        assert res.feature == data.name
        assert res.label_token_ids == solo.label_token_ids
        assert res.trajectory.top_ids == solo.trajectory.top_ids
        same_losses(res, solo)


def test_early_stop_and_convergence_bookkeeping(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    # A huge entropy weight drives p onto one token quickly.
    r = label_feature(data, tiny_evaluator,
                      cfg(steps=300, lambda_ent=50.0, lr=0.5, stop_early=True,
                          convergence_patience=5, convergence_mass=0.9))
    assert r.converged
    assert r.steps < 300
    assert r.converged_step == r.steps - 5
    assert r.probability >= 0.9
    assert all(max(p[0]) >= 0.9 for p in r.trajectory.top_probs[-5:])
    assert len(r.trajectory) == r.steps


def _small_gpu(calls, fits=1):
    """A pass that runs out of memory on more than `fits` rows (calls: each pass's rows)."""
    def logits(ctx, rows, label_embeds, columns=None):
        calls.append(len(rows))
        if len(rows) > fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return prompt_logits(ctx, rows, label_embeds, columns)

    return logits


def test_out_of_memory_halves_the_pass_and_carries_on(tiny_evaluator, caplog):
    data = FeatureData.from_sentences(SENTS)
    ref = label_feature(data, tiny_evaluator, cfg())
    calls = []
    # The final hard-label scoring runs through the same pass; keep it to one row too.
    config = cfg({"eval_batch_size": 1})
    encoded, jobs = feature_jobs([data.prepare(config)], tiny_evaluator, config)
    ctx = StepContext.build(tiny_evaluator, encoded, config.performance,
                            tiny_evaluator.vocab_mask(), pass_logits=_small_gpu(calls))
    with caplog.at_level("WARNING", logger=LOGGER):
        (got,) = optimize_labels(ctx, jobs, config)
    assert "halving to 2 rows" in caplog.text and "halving to 1 rows" in caplog.text
    assert max(calls) == 4 and calls.count(4) == 1  # halved once for all later steps
    assert got.label_token_ids == ref.label_token_ids
    assert got.trajectory.top_ids == ref.trajectory.top_ids
    same_losses(got, ref)


def test_out_of_memory_halving_gives_the_one_pass_gradient(tiny_evaluator, caplog):
    ev = tiny_evaluator
    encoded = [ev.encode("The cat chased the mouse.", "cat"), ev.encode("A dog", "dog"),
               ev.encode("The bird sang a song", "song")]
    plain = StepContext.build(ev, encoded, vocab_mask=ev.vocab_mask())
    batch = Batch(torch.tensor([0, 1, 2, 2, 0]), torch.tensor([0, 0, 1, 1, 1]),
                  torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64), live=[0, 1],
                  step=7)
    config = LabelConfig(lambda_ent=0.3, lambda_kl=0.2)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 1, ev.d_vocab, generator=g, dtype=torch.float64).requires_grad_(True)
    want_terms = step(plain, v, batch, config)
    want = v.grad.clone()

    def check(ctx, rows_per_pass):
        v.grad = torch.full_like(v, 123.0)  # stale: the step must start from zero
        terms, used = step_halving_on_oom(ctx, v, batch, config, rows_per_pass)
        torch.testing.assert_close(v.grad, want, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(terms.total, want_terms.total, rtol=1e-9, atol=1e-12)
        return used

    # Fits 2 rows: 5 rows fail, then passes of 2, 2 and 1.
    calls = []
    with caplog.at_level("WARNING", logger=LOGGER):
        assert check(replace(plain, pass_logits=_small_gpu(calls, 2)),
                     None) == 2
    assert calls == [5, 2, 2, 1]
    assert "out of memory at step 7; halving to 2 rows" in caplog.text
    # Fails in the second pass, after the first one's gradient was added: 3, (2), then 1s.
    calls, failed = [], []

    def second_pass_fails(ctx, rows, label_embeds, columns=None):
        calls.append(len(rows))
        if len(calls) == 2 and not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return prompt_logits(ctx, rows, label_embeds, columns)

    ctx = replace(plain, pass_logits=second_pass_fails)
    assert check(ctx, 3) == 1
    assert calls == [3, 2, 1, 1, 1, 1, 1]
    # One row that does not fit: nothing left to halve, the error stands.
    tiny = replace(plain, pass_logits=_small_gpu([], 0))
    with pytest.raises(torch.OutOfMemoryError):
        step_halving_on_oom(tiny, v, batch, config, None)


def test_init_logits_warm_start(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    mask = tiny_evaluator.vocab_mask()
    token = int(torch.nonzero(mask).flatten()[7])
    init = torch.zeros(tiny_evaluator.d_vocab, dtype=torch.float64)
    init[token] = 30.0  # p(token) ~ 1 from the first step
    config = cfg(steps=100, stop_early=True, convergence_patience=4, lr=1e-3)
    r = label_features_data([data], tiny_evaluator, config, init_logits=[init])[0]
    assert r.label_token_ids == [token] and r.converged and r.steps == 4
    with pytest.raises(ValueError, match="one .or None. per feature"):
        label_features_data([data], tiny_evaluator, config, init_logits=[init, init])
    with pytest.raises(ValueError, match="d_vocab"):
        label_features_data([data], tiny_evaluator, config, init_logits=[init[:5]])
