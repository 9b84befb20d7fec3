"""Backends: a TransformerBridge evaluator gives the HookedTransformer's logits on the same
weights, falls back (with one log line) where it cannot keep a cache, and labels reproducibly.
The exactness tests of `test_forward.py` and `optimize/test_engine.py` run on both backends."""

from __future__ import annotations

import logging

import pytest
import torch

import saelens_tokenlabel.evaluator.forward as forward
from saelens_tokenlabel import Evaluator, FeatureData, LabelConfig, label_feature
from saelens_tokenlabel.descent import StepContext
from saelens_tokenlabel.evaluator.backend import BridgeBackend, backend_of, is_bridge
from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    full_prompt_logits,
    hard_prompt_logits,
)
from saelens_tokenlabel.evaluator.loading import (
    boot_bridge,
    hooked_to_hf_llama,
    load_model,
    save_local_model,
)
from saelens_tokenlabel.records.config import PerformanceConfig

from ..builders import tiny_hf_llama, tiny_llama

SENTENCES = [("The cat chased the mouse.", "cat"), ("A dog", "dog"), ("x", "x")]


@pytest.fixture(scope="module")
def toy_pair():
    from saelens_tokenlabel.toy import load_toy_evaluator

    return load_toy_evaluator(), load_toy_evaluator(backend="bridge")


def _soft(ev, n, slots, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(4 * torch.randn(n, slots, ev.d_vocab, generator=g), -1)
    return p.to(ev.model.W_E.dtype) @ ev.model.W_E


def test_the_toy_evaluator_as_a_bridge_gives_its_hooked_logits(toy_pair):
    hooked, bridge = toy_pair
    assert hooked.backend.kind == "hooked" and bridge.backend.kind == "bridge"
    assert torch.equal(hooked.model.W_E, bridge.model.W_E)
    exs = [hooked.encode(s, w) for s, w in SENTENCES]
    assert exs == [bridge.encode(s, w) for s, w in SENTENCES]
    rows = torch.tensor([2, 0, 1, 0])
    e = _soft(hooked, len(rows), 2)
    picked = [exs[i] for i in rows]
    # fp32, the same network: HF's arithmetic order differs, so 1e-4, not 0.
    close = {"rtol": 1e-4, "atol": 1e-4}
    for a, b in ((hooked, bridge),):
        ca, cb = PrefixCache(a, exs), PrefixCache(b, exs)
        torch.testing.assert_close(cb.log_q, ca.log_q, **close)
        torch.testing.assert_close(cached_logits(b, cb, rows, e), cached_logits(a, ca, rows, e),
                                   **close)
        torch.testing.assert_close(full_prompt_logits(b, picked, e),
                                   full_prompt_logits(a, picked, e), **close)
        torch.testing.assert_close(hard_prompt_logits(b, exs, [5, 17]),
                                   hard_prompt_logits(a, exs, [5, 17]), **close)


def test_hooked_to_hf_llama_maps_every_weight_and_bias(tokenizer):
    model = tiny_llama(tokenizer, dtype=torch.float64, seed=3)
    with torch.no_grad():  # TransformerLens initialises biases at 0: make them matter
        g = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if ".b_" in name or "._b_" in name or name.endswith("b_U"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    hf = hooked_to_hf_llama(model)
    tokens = torch.tensor([[0, 5, 17, 30, 42, 7, 99]])
    with torch.no_grad():
        # Float64 models, but Hugging Face's RMSNorm normalises in float32: about 1e-6.
        torch.testing.assert_close(hf(tokens).logits, model(tokens), rtol=1e-5, atol=1e-5)
    # What a Llama config with default rotary embeddings cannot be is refused, never written
    # as a different network.
    for overrides, why in (({"normalization_type": "LN"}, "normalization_type"),
                           ({"normalization_type": "RMSPre"}, "normalization_type"),
                           ({"rotary_dim": 4}, "rotary_dim 4 is not d_head"),
                           ({"rotary_adjacent_pairs": True}, "it rotates adjacent pairs"),
                           ({"use_NTK_by_parts_rope": True}, "its rotary embeddings are scaled"),
                           ({"attn_scale": 4.0}, "attn_scale")):
        with pytest.raises(ValueError, match=f"as a Hugging Face Llama: {why}"):
            hooked_to_hf_llama(tiny_llama(tokenizer, **overrides))


def test_a_bridge_that_cannot_keep_a_cache_runs_whole_prompts_and_says_so_once(
        toy_pair, monkeypatch, caplog):
    _, bridge = toy_pair
    exs = [bridge.encode(s, w) for s, w in SENTENCES]
    rows = torch.tensor([0, 1, 2])
    e = _soft(bridge, 3, 1)
    want = full_prompt_logits(bridge, exs, e)
    # As a transformers/TransformerLens pair whose attention ignores the cache would.
    monkeypatch.setattr(BridgeBackend, "_cache_kwarg", lambda self: _nothing())
    monkeypatch.setattr(forward, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="saelens_tokenlabel.evaluator.forward"):
        ctx = StepContext.build(bridge, exs)
        StepContext.build(bridge, exs)
    said = [r.getMessage() for r in caplog.records if "prefix cache is off" in r.getMessage()]
    assert len(said) == 1 and "did not fill the key/value cache" in said[0]
    assert not ctx.cache.keep_kv and ctx.kv_cache is None
    torch.testing.assert_close(ctx.logits(rows, e), want, rtol=0, atol=0)
    torch.testing.assert_close(ctx.cache.log_q, PrefixCache(
        bridge, exs, keep_kv=False).log_q, rtol=1e-6, atol=1e-6)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_the_lean_suffix_forward_is_for_hooked_transformers_and_a_bridge_says_why(
        toy_pair, monkeypatch, caplog):
    hooked, bridge = toy_pair
    exs = [bridge.encode(s, w) for s, w in SENTENCES]
    monkeypatch.setattr(forward, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="saelens_tokenlabel.evaluator.forward"):
        assert PrefixCache(hooked, exs).runner is not None
        assert PrefixCache(bridge, exs).runner is None
    assert any("TransformerBridge, not a HookedTransformer" in r.getMessage()
               for r in caplog.records)


def test_a_bridge_labels_reproducibly_and_cached_as_uncached(toy_pair):
    _, bridge = toy_pair
    data = FeatureData.synthetic("animals")
    cfg = LabelConfig.preset("animals", steps=40, seed=3)
    a, b = label_feature(data, bridge, cfg), label_feature(data, bridge, cfg)
    assert a.label == b.label and a.trajectory.loss == b.trajectory.loss
    c = label_feature(data, bridge, LabelConfig.preset(
        "animals", steps=40, seed=3, performance=PerformanceConfig(use_cache=False)))
    assert c.label == a.label
    torch.testing.assert_close(torch.tensor(c.trajectory.loss), torch.tensor(a.trajectory.loss),
                               rtol=1e-4, atol=1e-5)


def test_models_load_as_either_backend(tokenizer, tmp_path):
    folder = tiny_hf_llama(tokenizer, tmp_path / "hf", dtype=torch.float32)
    bridge = load_model(str(folder), "cpu", torch.float32, backend="bridge")
    assert is_bridge(bridge) and backend_of(bridge).kind == "bridge"
    assert Evaluator(bridge).backend.kind == "bridge"
    hooked = tiny_llama(tokenizer, dtype=torch.float32)
    save_local_model(hooked, tmp_path / "local")
    as_bridge = load_model(str(tmp_path / "local"), "cpu", torch.float32, backend="bridge")
    tokens = torch.tensor([[0, 5, 17, 30]])
    with torch.no_grad():
        torch.testing.assert_close(as_bridge(tokens), hooked(tokens), rtol=1e-4, atol=1e-4)
    assert backend_of(load_model(str(tmp_path / "local"), "cpu")).kind == "hooked"
    with pytest.raises(ValueError, match="backend 'vllm' is not one of hooked, bridge"):
        load_model(str(folder), "cpu", backend="vllm")
    assert is_bridge(boot_bridge(hooked_to_hf_llama(hooked), tokenizer))
