"""The lean suffix forward (`suffix.SuffixRunner`) against TransformerLens's, float64, for
every evaluator family it takes (each built by hand with the config fields TransformerLens's
``convert_hf_model_config`` sets, tiny random weights)."""

from __future__ import annotations

import logging

import pytest
import torch

from saelens_tokenlabel import Evaluator, LabelConfig
from saelens_tokenlabel.descent import FeatureJob, StepContext, run_attempt
from saelens_tokenlabel.evaluator import forward
from saelens_tokenlabel.evaluator.forward import PrefixCache, cached_logits, full_prompt_logits
from saelens_tokenlabel.evaluator.loading import hooked_to_hf_llama
from saelens_tokenlabel.evaluator.suffix import SuffixRunner, local_window, unsupported
from saelens_tokenlabel.records.config import PerformanceConfig

from ..builders import tiny_llama
from .test_forward import SENTENCES

WINDOW = 24
"""A sliding window shorter than every prompt (200-237 prefix tokens, 15 suffix tokens): it
cuts into the prefix, and into the suffix itself."""
GEMMA = dict(d_head=12, n_key_value_heads=2, act_fn="gelu_pytorch_tanh", gated_mlp=True,
             normalization_type="RMS", use_normalization_before_and_after=True,
             use_local_attn=True, attn_types=["local", "global"], window_size=WINDOW,
             final_rms=True)
"""Gemma 2/3's shape: d_head apart from d_model / n_heads, norms before and after attention
and MLP, gelu-tanh gated MLP, local and global layers alternating (embeddings are scaled
inside W_E by TransformerLens's conversion: nothing to build)."""
GPT2 = dict(original_architecture="GPT2LMHeadModel", normalization_type="LN",
            positional_embedding_type="standard", act_fn="gelu_new", gated_mlp=False,
            n_key_value_heads=None)
FAMILIES = {
    "llama (GQA, gated SiLU)": {},
    "multi-head, plain GELU MLP": dict(n_key_value_heads=None, gated_mlp=False, act_fn="gelu"),
    "adjacent rotary pairs, partial rotary": dict(rotary_adjacent_pairs=True, rotary_dim=4),
    "RMSPre, rotary base 5e5": dict(normalization_type="RMSPre", rotary_base=500000),
    "gemma 1 (MQA, gated GELU, wide heads)": dict(
        original_architecture="GemmaForCausalLM", d_head=12, n_key_value_heads=1,
        act_fn="gelu", final_rms=True),
    "gemma 2 (soft-caps, sliding window, query scale)": dict(
        GEMMA, original_architecture="Gemma2ForCausalLM", attn_scores_soft_cap=4.0,
        output_logits_soft_cap=6.0, attn_scale=3.0),
    "gemma 3 (QK-norm, local rotary base, MQA)": dict(
        GEMMA, original_architecture="Gemma3ForCausalLM", n_key_value_heads=1,
        use_qk_norm=True, rotary_base=1000000, rotary_base_local=10000,
        rotary_scaling_factor=8.0),
    "gpt-2 (LayerNorm, absolute positions, biases)": GPT2,
    "gpt-2 folded (LNPre, attention scaled by layer)": dict(
        GPT2, normalization_type="LNPre", scale_attn_by_inverse_layer_idx=True),
    "qwen 2 (QKV biases)": dict(original_architecture="Qwen2ForCausalLM", rotary_base=1000000,
                                final_rms=True),
    "mistral (sliding window)": dict(original_architecture="MistralForCausalLM",
                                     use_local_attn=True, attn_types=["local", "local"],
                                     window_size=WINDOW),
    "unnormalised, one layer": dict(n_layers=1, normalization_type=None),
    "attention only, LayerNorm": dict(attn_only=True, normalization_type="LN"),
}
NEW_FAMILIES = [f for f in FAMILIES if f.split(" ")[0] not in ("multi-head,", "adjacent",
                                                               "RMSPre,")]


def family_model(tokenizer, family: str, **overrides):
    """The family's tiny float64 model; biases and norm weights (TransformerLens starts them
    at 0 and 1) drawn at random, so that every one of them reaches the logits."""
    model = tiny_llama(tokenizer, **{**FAMILIES[family], **overrides})
    g = torch.Generator().manual_seed(7)
    # Without norms, the weights `tiny_llama` scales up compound to logits of ~1e4 (float64's
    # last digits then 1e-12 apart): half of them gives logits of ~10, as with norms.
    shrink = 0.5 if model.cfg.normalization_type is None else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(shrink)
            if p.ndim == 1 or name.rsplit(".", 1)[-1].lstrip("_").startswith("b_"):
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _soft_embeds(ev, n: int, slots: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(n, slots, ev.d_vocab, generator=g, dtype=torch.float64), -1)
    return (p @ ev.model.W_E).requires_grad_(True)


def _three(ev, exs, rows, embeds):
    """(lean, TransformerLens cached, full prompt) logits of the same rows."""
    fast = PrefixCache(ev, exs, batch_size=3)
    slow = PrefixCache(ev, exs, batch_size=3, fast=False)
    assert fast.runner is not None and slow.runner is None
    return (cached_logits(ev, fast, rows, embeds), cached_logits(ev, slow, rows, embeds),
            full_prompt_logits(ev, [exs[int(r)] for r in rows], embeds))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("slots", [1, 2])
def test_lean_suffix_equals_transformer_lens(tokenizer, family, slots):
    ev = Evaluator(family_model(tokenizer, family))
    assert unsupported(ev.model) is None
    exs = [ev.encode(s, w) for s, w in SENTENCES]
    rows = torch.tensor([3, 0, 0, 2, 1])  # repeats, any order, mixed prefix lengths
    embeds = _soft_embeds(ev, len(rows), slots)
    outs = _three(ev, exs, rows, embeds)
    grads = [torch.autograd.grad(o[:, ev.yes_id].sum() - o[:, ev.no_id].sum(), embeds)[0]
             for o in outs]
    for o, gr in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(outs[0], o, rtol=0, atol=1e-12)
        torch.testing.assert_close(grads[0], gr, rtol=1e-12, atol=1e-12)
    # The answer tokens' logits alone (what the two-way prediction reads): the same values.
    cols = torch.tensor([ev.yes_id, ev.no_id])
    fast = PrefixCache(ev, exs)
    torch.testing.assert_close(cached_logits(ev, fast, rows, embeds, cols), outs[2][:, cols],
                               rtol=0, atol=1e-12)


def _kv_rows(cache: PrefixCache, rows: torch.Tensor) -> tuple[list, list, torch.Tensor]:
    kv = cache.gather(rows)
    return kv.keys, kv.values, kv.mask


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("share", [True, False])
def test_lean_prefix_pass_equals_transformer_lens(tokenizer, family, share, monkeypatch):
    # The prefix pass through the lean forward: the keys and values it caches (those of
    # tokens; padding is never attended to) and log q at the label slot are TransformerLens's,
    # with the shared part (and without: every prefix run whole, left-padded).
    if not share:
        monkeypatch.setattr(forward, "_common_prefix_len", lambda seqs: 0)
    ev = Evaluator(family_model(tokenizer, family))
    exs = [ev.encode(s, w) for s, w in SENTENCES]
    calls = []
    lean = SuffixRunner.prefix
    monkeypatch.setattr(SuffixRunner, "prefix",
                        lambda self, *a, **k: calls.append(1) or lean(self, *a, **k))
    fast = PrefixCache(ev, exs, batch_size=3)
    slow = PrefixCache(ev, exs, batch_size=3, fast=False)
    assert fast.runner is not None and slow.runner is None
    # (A window of 24 tokens bites into these prompts: nothing is shared then, and the
    # window cuts into the prefix pass itself.)
    assert fast.shared_len == slow.shared_len
    assert (fast.shared_len > 0) == (share and local_window(ev.model) is None)
    assert len(calls) == 2 + (fast.shared_len > 0)  # two batches, the shared part
    torch.testing.assert_close(fast.log_q_all, slow.log_q_all, rtol=0, atol=1e-12)
    rows = torch.arange(len(exs))
    (fk, fv, fm), (sk, sv, sm) = _kv_rows(fast, rows), _kv_rows(slow, rows)
    assert torch.equal(fm, sm)
    for a, b in zip(fk + fv, sk + sv, strict=True):
        assert a.shape == b.shape and torch.isfinite(a).all()
        torch.testing.assert_close(a[fm], b[sm], rtol=0, atol=1e-12)
    # Read by TransformerLens's own cached pass (KL's conditional q, the prior proposals).
    ids = torch.tensor([[5, 9]] * len(exs))
    torch.testing.assert_close(forward.conditional_log_q(ev, exs, fast, rows, ids),
                               forward.conditional_log_q(ev, exs, None, rows, ids),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_labeling_steps_take_the_lean_path(tokenizer, family, monkeypatch, caplog):
    ev = Evaluator(family_model(tokenizer, family))
    exs = [ev.encode(s, w) for s, w in SENTENCES]
    job = FeatureJob(family, torch.arange(len(exs)), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    lean_calls = []
    lean = SuffixRunner.logits
    monkeypatch.setattr(SuffixRunner, "logits",
                        lambda self, *a, **k: lean_calls.append(1) or lean(self, *a, **k))
    monkeypatch.setattr(forward, "_LOGGED", set())
    losses = []
    for fast in (True, False):
        cfg = LabelConfig(steps=4, stop_early=False, batch_size=4, restarts=(), seed=2,
                          performance=PerformanceConfig(fast_suffix=fast))
        with caplog.at_level(logging.INFO, logger="saelens_tokenlabel.evaluator.forward"):
            ctx = StepContext.build(ev, exs, cfg.performance)
            (state,) = run_attempt(ctx, [job], cfg)
        losses.append(torch.tensor(state.trajectory.loss))
        if fast:
            assert len(lean_calls) == 4
            assert not [r for r in caplog.records if "lean suffix forward" in r.getMessage()]
    assert len(lean_calls) == 4 and len(losses[0]) == 4
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-10)


def test_other_architectures_keep_transformer_lens_and_say_why(tokenizer, caplog):
    model = tiny_llama(tokenizer, parallel_attn_mlp=True)
    assert "parallel_attn_mlp is True" in unsupported(model)
    olmo = tiny_llama(tokenizer, original_architecture="Olmo2ForCausalLM")
    assert "Olmo2ForCausalLM normalises" in unsupported(olmo)
    alibi = tiny_llama(tokenizer, positional_embedding_type="alibi", n_key_value_heads=None)
    assert "positional_embedding_type is 'alibi'" in unsupported(alibi)
    # Hooks a user attached would not run in the lean forward: TransformerLens's path then.
    hooked = tiny_llama(tokenizer)
    handle = hooked.blocks[0].attn.hook_q.add_hook(lambda act, hook: act)
    assert "hooks are attached" in unsupported(hooked)
    hooked.reset_hooks()
    assert unsupported(hooked) is None
    del handle
    ev = Evaluator(model)
    exs = [ev.encode(s, w) for s, w in SENTENCES]
    with caplog.at_level(logging.INFO, logger="saelens_tokenlabel.evaluator.forward"):
        cache = PrefixCache(ev, exs)
        PrefixCache(ev, exs)
    assert cache.runner is None
    said = [r.message for r in caplog.records if "lean suffix forward" in r.message]
    assert len(said) <= 1 and (not said or "parallel_attn_mlp" in said[0])
    e = torch.softmax(torch.randn(len(exs), 1, ev.d_vocab, dtype=torch.float64), -1) \
        @ ev.model.W_E
    torch.testing.assert_close(cached_logits(ev, cache, torch.arange(len(exs)), e),
                               full_prompt_logits(ev, exs, e), rtol=0, atol=1e-12)


def test_a_window_that_can_bite_keeps_padding_out_of_it(tokenizer, monkeypatch, caplog):
    # TransformerLens counts a local window in cache slots, padding included: the prefix cache
    # shares the common part of the prompts only when no window can reach across the padding
    # that follows it, and says so once when it cannot.
    family = "mistral (sliding window)"
    exs = None
    monkeypatch.setattr(forward, "_LOGGED", set())
    for window, shares in ((WINDOW, False), (300, True), (None, True)):
        over = dict(window_size=window) if window else dict(use_local_attn=False)
        ev = Evaluator(family_model(tokenizer, family, **over))
        assert local_window(ev.model) == window
        exs = exs or [ev.encode(s, w) for s, w in SENTENCES]
        with caplog.at_level(logging.INFO, logger="saelens_tokenlabel.evaluator.forward"):
            cache = PrefixCache(ev, exs)
        assert (cache.shared_len > 0) == shares
        e = _soft_embeds(ev, len(exs), 1).detach()
        full = full_prompt_logits(ev, exs, e)
        torch.testing.assert_close(cached_logits(ev, cache, torch.arange(len(exs)), e), full,
                                   rtol=0, atol=1e-12)
        if window == WINDOW:
            bitten = full
    # The window bites: the same weights without it rate otherwise.
    assert (bitten - full).abs().max() > 1e-3
    said = [r.getMessage() for r in caplog.records if "shares no part" in r.getMessage()]
    assert len(said) == 1 and f"window ({WINDOW} tokens)" in said[0]


def test_families_the_llama_conversion_cannot_write_are_still_refused(tokenizer):
    # `loading.hooked_to_hf_llama` relied on `unsupported` to refuse these: now that the lean
    # forward takes them, it refuses them itself.
    for model, why in (
            (family_model(tokenizer, "mistral (sliding window)"), "local"),
            (tiny_llama(tokenizer, attn_scores_soft_cap=5.0), "soft-caps"),
            (tiny_llama(tokenizer, output_logits_soft_cap=5.0), "soft-caps"),
            (tiny_llama(tokenizer, use_qk_norm=True), "QK-norm"),
            (tiny_llama(tokenizer, use_normalization_before_and_after=True), "outputs too"),
            (tiny_llama(tokenizer, attn_only=True), "attn_only")):
        with pytest.raises(ValueError, match=f"as a Hugging Face Llama: .*{why}"):
            hooked_to_hf_llama(model)


def test_positions_past_the_rotary_table_extend_it_as_transformer_lens_does(tokenizer):
    # TransformerLens's rotary table starts at 2048 rows and grows when a longer input comes:
    # a prefix that ends just before it and a suffix that runs past it.
    ev = Evaluator(tiny_llama(tokenizer, n_ctx=4096))
    short = ev.encode("x", "x")
    n_fill = 2040 - len(short.prefix_ids)
    ex = ev.encode(" ".join(["a"] * n_fill) + " x", "x")
    assert len(ex.prefix_ids) < 2048 < len(ex.prefix_ids) + len(ev.suffix_ids(1))
    e = torch.softmax(torch.randn(1, 1, ev.d_vocab, dtype=torch.float64), -1) @ ev.model.W_E
    fast = PrefixCache(ev, [ex])
    torch.testing.assert_close(cached_logits(ev, fast, torch.tensor([0]), e),
                               full_prompt_logits(ev, [ex], e), rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", ["llama (GQA, gated SiLU)",
                                    "gpt-2 (LayerNorm, absolute positions, biases)",
                                    "gemma 2 (soft-caps, sliding window, query scale)"])
def test_the_runner_keeps_no_copy_of_the_weights(tokenizer, family):
    """Every tensor the lean forward keeps is the model's own storage (a view, at most):
    copies of the weights would double the evaluator's memory (16 GB more for an 8B model
    in bf16), and the README promises that one 24 GB GPU holds it."""
    ev = Evaluator(family_model(tokenizer, family))
    runner = SuffixRunner(ev.model, [0])
    owned = {p.untyped_storage().data_ptr() for p in ev.model.parameters()}
    owned |= {b.untyped_storage().data_ptr() for b in ev.model.buffers()}
    kept = [(name, v) for layer in runner.layers for name, v in vars(layer).items()
            if isinstance(v, torch.Tensor)]
    kept += [(f"mlp {k}", v) for layer in runner.layers if layer.mlp is not None
             for k, v in layer.mlp.keywords.items() if isinstance(v, torch.Tensor)]
    kept += [(k, getattr(runner, k)) for k in ("W_U", "b_U", "W_E")]
    assert len(kept) > 10 * len(runner.layers) // 2
    copies = [name for name, v in kept if v.untyped_storage().data_ptr() not in owned]
    assert copies == []
    # A stray copy is seen: the test can fail.
    assert runner.layers[0].W_O.contiguous().untyped_storage().data_ptr() not in owned
