"""The lean suffix forward (`suffix.SuffixRunner`) against TransformerLens's, float64."""

from __future__ import annotations

import logging

import pytest
import torch

from saelens_tokenlabel import Evaluator
from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    full_prompt_logits,
)
from saelens_tokenlabel.evaluator.suffix import unsupported

from ..builders import tiny_llama
from .test_forward import SENTENCES

VARIANTS = {
    "llama (GQA, gated SiLU)": {},
    "multi-head, plain GELU MLP": dict(n_key_value_heads=None, gated_mlp=False, act_fn="gelu"),
    "adjacent rotary pairs, partial rotary": dict(rotary_adjacent_pairs=True, rotary_dim=4),
    "RMSPre, rotary base 5e5": dict(normalization_type="RMSPre", rotary_base=500000),
}


def _both(ev, exs, rows, embeds):
    """(lean, TransformerLens cached, full prompt) logits of the same rows."""
    fast = PrefixCache(ev, exs, batch_size=3)
    slow = PrefixCache(ev, exs, batch_size=3, fast=False)
    assert fast.runner is not None and slow.runner is None
    return (cached_logits(ev, fast, rows, embeds), cached_logits(ev, slow, rows, embeds),
            full_prompt_logits(ev, [exs[int(r)] for r in rows], embeds))


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("slots", [1, 2])
def test_lean_suffix_equals_transformer_lens(tokenizer, variant, slots):
    ev = Evaluator(tiny_llama(tokenizer, **VARIANTS[variant]))
    assert unsupported(ev.model) is None
    exs = [ev.encode(s, w) for s, w in SENTENCES]
    rows = torch.tensor([3, 0, 0, 2, 1])  # repeats, any order, mixed prefix lengths
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(len(rows), slots, ev.d_vocab, generator=g,
                                  dtype=torch.float64), -1)
    embeds = (p @ ev.model.W_E).requires_grad_(True)
    outs = _both(ev, exs, rows, embeds)
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


def test_other_architectures_keep_transformer_lens_and_say_why(tokenizer, caplog):
    model = tiny_llama(tokenizer, normalization_type="LN")
    assert "normalization_type is 'LN'" in unsupported(model)
    soft = tiny_llama(tokenizer, attn_scores_soft_cap=30.0)
    assert "soft-caps" in unsupported(soft)
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
    assert len(said) <= 1 and (not said or "normalization_type" in said[0])
    e = torch.softmax(torch.randn(len(exs), 1, ev.d_vocab, dtype=torch.float64), -1) \
        @ ev.model.W_E
    torch.testing.assert_close(cached_logits(ev, cache, torch.arange(len(exs)), e),
                               full_prompt_logits(ev, exs, e), rtol=0, atol=1e-12)


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
