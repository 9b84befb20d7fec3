"""Gradients, determinism and feature batching of the optimisation (float64 tiny model)."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel import FeatureData, LabelConfig, label_feature, label_features_data
from saelens_tokenlabel.forward import PrefixCache, cached_logits, full_prompt_logits
from saelens_tokenlabel.loss import accuracy_loss, label_loss
from saelens_tokenlabel.soft_label import label_embeddings, label_log_probs

SENTS = [
    [("The", 0.0), (" cat", 1.0), (" chased", 0.0), (" the", 0.0), (" mouse", 0.8), (".", 0.0)],
    [("A", 0.0), (" dog", 0.9), (" barked", 0.0)],
    [("The", 0.0), (" bird", 0.7), (" sang", 0.0), (" a", 0.0), (" song", 0.0)],
]


def _loss_fn(ev, use_cache, mask):
    exs = [ev.encode("The cat chased the mouse.", "cat"), ev.encode("A dog", "dog"),
           ev.encode("The bird sang a song", "song")]
    cache = PrefixCache.build(ev, exs)
    rows = torch.tensor([0, 1, 2, 2])
    row_feature = torch.tensor([0, 0, 1, 1])
    targets = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)

    def loss(v):
        log_p = label_log_probs(v, mask)
        e = label_embeddings(log_p.exp(), ev.model.W_E)[row_feature]
        if use_cache:
            logits = cached_logits(ev, cache, rows, e)
        else:
            logits = full_prompt_logits(ev, [exs[i] for i in rows], e)
        acc = accuracy_loss(logits, targets, ev.yes_id, ev.no_id)
        counts = torch.bincount(row_feature, minlength=2)
        terms = label_loss(log_p, row_feature, acc, cache.log_q[rows], counts, 1.0, 0.3, 0.2)
        return terms.total.sum()

    return loss


def _v(ev, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, ev.d_vocab, generator=g, dtype=torch.float64)


def test_gradient_matches_finite_differences(tiny_evaluator):
    ev = tiny_evaluator
    mask = ev.vocab_mask()
    loss = _loss_fn(ev, use_cache=True, mask=mask)
    v = _v(ev).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(v), v)
    assert torch.isfinite(grad).all()
    assert (grad[:, :, ~mask] == 0).all()  # masked tokens get no gradient
    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(4):
        d = torch.randn(v.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            fd = (loss(v + eps * d) - loss(v - eps * d)) / (2 * eps)
        torch.testing.assert_close((grad * d).sum(), fd, rtol=1e-6, atol=1e-8)


def test_cached_gradient_equals_uncached(tiny_evaluator):
    ev = tiny_evaluator
    v = _v(ev, seed=3).requires_grad_(True)
    (g_cached,) = torch.autograd.grad(_loss_fn(ev, True, None)(v), v)
    (g_full,) = torch.autograd.grad(_loss_fn(ev, False, None)(v), v)
    torch.testing.assert_close(g_cached, g_full, rtol=1e-9, atol=1e-12)


def test_only_v_gets_gradient(tiny_evaluator):
    ev = tiny_evaluator
    v = _v(ev).requires_grad_(True)
    _loss_fn(ev, True, None)(v).backward()
    assert v.grad is not None
    assert all(p.grad is None for p in ev.model.parameters())


def _same_losses(a, b):
    torch.testing.assert_close(torch.tensor(a.trajectory.loss, dtype=torch.float64),
                               torch.tensor(b.trajectory.loss, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


def _cfg(**kw):
    base = dict(steps=12, batch_size=4, lr=0.1, stop_early=False, trajectory_top_k=5,
                restarts=(), confusion_every=3)
    base.update(kw)
    return LabelConfig(**base)


def test_same_seed_same_label_and_trajectory(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, _cfg(seed=7, init_std=0.5))
    b = label_feature(data, tiny_evaluator, _cfg(seed=7, init_std=0.5))
    assert a.to_dict() == b.to_dict()
    c = label_feature(data, tiny_evaluator, _cfg(seed=8, init_std=0.5))
    assert c.trajectory.top_ids != a.trajectory.top_ids


def test_cached_run_equals_uncached_run(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, _cfg(use_cache=True))
    b = label_feature(data, tiny_evaluator, _cfg(use_cache=False))
    assert a.label_token_ids == b.label_token_ids
    assert a.trajectory.top_ids == b.trajectory.top_ids
    _same_losses(a, b)


def test_batched_features_equal_solo_runs(tiny_evaluator):
    d1 = FeatureData.from_sentences(SENTS, name="f1")
    flipped = [[(t, 1.0 - min(a, 1.0)) for t, a in s] for s in SENTS]
    d2 = FeatureData.from_sentences(flipped, name="f2")
    together = label_features_data([d1, d2], tiny_evaluator, _cfg())
    for data, res in zip((d1, d2), together, strict=True):
        solo = label_feature(data, tiny_evaluator, _cfg())
        assert res.feature == data.name
        assert res.label_token_ids == solo.label_token_ids
        assert res.trajectory.top_ids == solo.trajectory.top_ids
        _same_losses(res, solo)


def test_early_stop_and_convergence_bookkeeping(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    # A huge entropy weight drives p onto one token quickly.
    r = label_feature(data, tiny_evaluator,
                      _cfg(steps=300, lambda_ent=50.0, lr=0.5, stop_early=True,
                           convergence_patience=5, convergence_mass=0.9))
    assert r.converged
    assert r.steps < 300
    assert r.converged_step == r.steps - 5
    assert r.probability >= 0.9
    assert all(max(p[0]) >= 0.9 for p in r.trajectory.top_probs[-5:])
    assert len(r.trajectory) == r.steps


def test_micro_batches_give_the_same_run(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    a = label_feature(data, tiny_evaluator, _cfg())
    b = label_feature(data, tiny_evaluator, _cfg(max_rows_per_pass=3))
    assert a.trajectory.top_ids == b.trajectory.top_ids
    _same_losses(a, b)


def test_out_of_memory_halves_the_pass_and_carries_on(tiny_evaluator, monkeypatch, caplog):
    import saelens_tokenlabel.optimize as opt_mod

    data = FeatureData.from_sentences(SENTS)
    ref = label_feature(data, tiny_evaluator, _cfg())
    real = opt_mod._logits
    calls = []

    def small_gpu(evaluator, encoded, cache, rows, label_embeds, use_cache):
        calls.append(len(rows))
        if len(rows) > 1:  # this "GPU" fits one row per pass
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(evaluator, encoded, cache, rows, label_embeds, use_cache)

    monkeypatch.setattr(opt_mod, "_logits", small_gpu)
    with caplog.at_level("WARNING", logger="saelens_tokenlabel.optimize"):
        # The final hard-label scoring runs outside the step loop; keep it to one row too.
        got = label_feature(data, tiny_evaluator, _cfg(eval_batch_size=1))
    assert "halving to 2 rows" in caplog.text and "halving to 1 rows" in caplog.text
    assert max(calls) == 4 and calls.count(4) == 1  # halved once for all later steps
    assert got.label_token_ids == ref.label_token_ids
    assert got.trajectory.top_ids == ref.trajectory.top_ids
    _same_losses(got, ref)


def test_balanced_and_confusion_samplers_both_run_exactly(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    for sampler in ("balanced", "confusion"):
        a = label_feature(data, tiny_evaluator, _cfg(sampler=sampler, use_cache=True))
        b = label_feature(data, tiny_evaluator, _cfg(sampler=sampler, use_cache=False))
        assert a.trajectory.top_ids == b.trajectory.top_ids
        _same_losses(a, b)


def test_restarts_run_until_success_and_keep_the_best(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    restarts = ({"lr": 0.3, "seed": 1}, {"lambda_ent": 2.0, "seed": 2})
    # Unreachable success: every attempt runs, the best by held-out score is kept.
    r = label_feature(data, tiny_evaluator, _cfg(restarts=restarts, success_score=1.0,
                                                  holdout_fraction=0.0))
    assert [a["attempt"] for a in r.attempts] == [0, 1, 2]
    assert [a["overrides"] for a in r.attempts] == [{}, *restarts]
    chosen = [a for a in r.attempts if a["selected"]]
    assert len(chosen) == 1 and chosen[0]["label_token_ids"] == r.label_token_ids
    best = max(a["metrics"]["train_balanced_accuracy"] for a in r.attempts)
    assert r.metrics["train_balanced_accuracy"] == best
    assert r.metrics["steps_total"] == sum(a["steps"] for a in r.attempts) == 36
    assert r.config["lr"] == {**{"lr": 0.1}, **chosen[0]["overrides"]}["lr"]
    assert "trajectory" not in r.attempts[0]
    # A feature that succeeds at once runs no restart.
    quick = label_feature(data, tiny_evaluator, _cfg(
        restarts=restarts, success_score=0.01, steps=300, lambda_ent=50.0, lr=0.5,
        stop_early=True, convergence_patience=5, holdout_fraction=0.0))
    assert quick.converged and len(quick.attempts) == 1 and quick.attempts[0]["selected"]


def test_restarts_of_batched_features_equal_solo_runs(tiny_evaluator):
    d1 = FeatureData.from_sentences(SENTS, name="f1")
    flipped = [[(t, 1.0 - min(a, 1.0)) for t, a in s] for s in SENTS]
    d2 = FeatureData.from_sentences(flipped, name="f2")
    cfg = _cfg(restarts=({"lr": 0.3, "seed": 1},), success_score=1.0)
    together = label_features_data([d1, d2], tiny_evaluator, cfg)
    for data, res in zip((d1, d2), together, strict=True):
        solo = label_feature(data, tiny_evaluator, cfg)
        assert [a["label_token_ids"] for a in res.attempts] == \
            [a["label_token_ids"] for a in solo.attempts]
        _same_losses(res, solo)


def test_init_logits_warm_start(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    mask = tiny_evaluator.vocab_mask()
    token = int(torch.nonzero(mask).flatten()[7])
    init = torch.zeros(tiny_evaluator.d_vocab, dtype=torch.float64)
    init[token] = 30.0  # p(token) ~ 1 from the first step
    cfg = _cfg(steps=100, stop_early=True, convergence_patience=4, lr=1e-3)
    r = label_features_data([data], tiny_evaluator, cfg, init_logits=[init])[0]
    assert r.label_token_ids == [token] and r.converged and r.steps == 4
    with pytest.raises(ValueError, match="one .or None. per feature"):
        label_features_data([data], tiny_evaluator, cfg, init_logits=[init, init])
    with pytest.raises(ValueError, match="d_vocab"):
        label_features_data([data], tiny_evaluator, cfg, init_logits=[init[:5]])


def test_two_slot_labels_and_growing(tiny_evaluator):
    data = FeatureData.from_sentences(SENTS)
    r = label_feature(data, tiny_evaluator, _cfg(label_length=2))
    assert len(r.label_token_ids) == 2 and len(r.trajectory.top_ids[0]) == 2
    assert r.metrics["loss_kl"] > 0
    grown = label_feature(data, tiny_evaluator, _cfg(grow_label=True, max_label_length=3,
                                                      grow_min_gain=-1.0))
    # A gain of at least -1 is always met: the label grows to the maximum.
    assert [a["label_length"] for a in grown.attempts] == [1, 2, 3]
    assert len(grown.label_token_ids) == 3 and grown.attempts[-1]["selected"]
    # The grown attempt starts from the shorter label's v: its first slot starts where the
    # one-slot attempt ended.
    assert grown.trajectory.top_ids[0][0][0] == grown.attempts[1]["label_token_ids"][0]
    kept = label_feature(data, tiny_evaluator, _cfg(grow_label=True, grow_min_gain=2.0))
    assert [a["label_length"] for a in kept.attempts] == [1, 2]
    assert kept.attempts[0]["selected"] and "rejected" in kept.attempts[1]
    assert len(kept.label_token_ids) == 1
