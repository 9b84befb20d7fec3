"""How the evaluator model runs: a `HookedTransformer`, or a TransformerLens 3 `TransformerBridge`.

`forward.py` asks one thing of a model: run some tokens after an optional cached prefix, with
the label's embeddings written into some slots, and give the logits of the last positions (and,
when asked, the keys and values of everything run so far, to cache). `backend_of` picks the
implementation:

* `HookedBackend`: TransformerLens's own KV cache (`TransformerLensKeyValueCache`), the label
  written at ``hook_embed``, the residual stream unembedded at the last positions only.
* `BridgeBackend`: the bridge's Hugging Face model. The label is written at the bridge's
  ``hook_embed``; the prefix cache is a Hugging Face `DynamicCache`, filled from the cached
  keys and values; positions come from the attention mask, as in `HookedBackend`, so padding
  never shifts them; ``logits_to_keep`` unembeds the last positions only.

Cached keys and values are per layer ``[batch, pos, kv_head, d_head]`` in both, each in its
own model's convention (TransformerLens caches keys before the rotary embedding, Hugging Face
after): a cache is only ever read by the backend that wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from ..records.errors import BackendError
from .suffix import PrefixKV, prefix_kv

log = logging.getLogger(__name__)

LabelSlots = tuple[int, Float[torch.Tensor, "batch slot d_model"]]
"""(first slot's position among the tokens run, the label's embeddings for the slots)."""


@dataclass(frozen=True)
class Pass:
    """One forward pass of the evaluator."""

    tokens: Int[torch.Tensor, "batch pos"]
    """The tokens to run (after the cached prefix, if any)."""
    mask: Int[torch.Tensor, "batch pos"] | None = None
    """Which of `tokens` are tokens (0: left padding); None: all."""
    past: PrefixKV | None = None
    """The cached prefix the tokens attend to."""
    label: LabelSlots | None = None
    """Label embeddings written over the embeddings of some of `tokens`."""
    last: int = 1
    """Logits are returned for this many last positions."""
    keep_kv: bool = False
    """Also return the keys and values of the prefix and `tokens`, to cache."""


def _promote(logits: torch.Tensor) -> torch.Tensor:
    # Softmax and loss in at least fp32, whatever the evaluator's dtype (bf16 on GPU).
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _inject_hook(label: LabelSlots) -> Any:
    start, embeds = label
    n_slots = embeds.shape[1]

    def inject(embed: torch.Tensor, hook: object) -> torch.Tensor:
        e = embeds.to(device=embed.device, dtype=embed.dtype)
        return torch.cat([embed[:, :start], e, embed[:, start + n_slots:]], dim=1)

    return inject


def _full_mask(p: Pass, device: torch.device) -> torch.Tensor:
    mask = torch.ones_like(p.tokens) if p.mask is None else p.mask
    mask = mask.to(device).long()
    if p.past is not None:
        mask = torch.cat([p.past.mask.to(device).long(), mask], dim=1)
    return mask


class HookedBackend:
    """A `HookedTransformer` evaluator (module docstring)."""

    kind = "hooked"

    def __init__(self, model: Any) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return self.model.W_E.device

    def run(self, p: Pass) -> tuple[Float[torch.Tensor, "batch last d_vocab"], PrefixKV | None]:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        model, device = self.model, self.device
        mask = None if p.mask is None else p.mask.to(device)
        cache = None
        if p.past is not None:
            cache = self._cache(p.past)
        elif p.keep_kv:
            cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(p.tokens))
        hooks = [] if p.label is None else [("hook_embed", _inject_hook(p.label))]
        with model.hooks(fwd_hooks=hooks):
            resid = model(p.tokens.to(device), attention_mask=mask, past_kv_cache=cache,
                          stop_at_layer=model.cfg.n_layers)
        kv = None
        if p.keep_kv:
            assert cache is not None  # made above: keep_kv without a past
            kv = prefix_kv([e.past_keys for e in cache.entries],
                           [e.past_values for e in cache.entries], _full_mask(p, device))
        return self._unembed(resid[:, -p.last:]), kv

    def _cache(self, past: PrefixKV) -> Any:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import (
            TransformerLensKeyValueCacheEntry,
        )

        # Not frozen: a pass that keeps keys/values appends its own to these (new tensors;
        # the cached ones are never written).
        entries = [TransformerLensKeyValueCacheEntry(k, v, frozen=False)
                   for k, v in zip(past.keys, past.values, strict=True)]
        return TransformerLensKeyValueCache(entries, past.mask.long().to(self.device),
                                            frozen=False)

    def _unembed(self, resid: Float[torch.Tensor, "batch last d_model"]
                 ) -> Float[torch.Tensor, "batch last d_vocab"]:
        # Only the positions read: a full [batch, pos, d_vocab] unembed would dominate memory
        # for a 128k vocabulary.
        from transformer_lens.utilities import apply_softcap

        model = self.model
        if model.cfg.normalization_type is not None:
            resid = model.ln_final(resid)
        return _promote(apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap))

    def kv_heads(self) -> int:
        cfg = self.model.cfg
        return int(cfg.n_key_value_heads or cfg.n_heads)


class BridgeBackend:
    """A `TransformerBridge` evaluator, run through its Hugging Face model (module docstring)."""

    kind = "bridge"

    def __init__(self, model: Any) -> None:
        self.model = model
        hf = getattr(model, "original_model", None)
        if hf is None or not hasattr(hf, "config"):
            raise BackendError(
                f"The evaluator {type(model).__name__} has no Hugging Face model "
                "(original_model); boot it with TransformerBridge.boot_transformers(...).")
        self.config = hf.config
        self._attention = [b.attn for b in getattr(model, "blocks", [])]

    @property
    def device(self) -> torch.device:
        return self.model.W_E.device

    def run(self, p: Pass) -> tuple[Float[torch.Tensor, "batch last d_vocab"], PrefixKV | None]:
        from transformers import DynamicCache

        device = self.device
        tokens = p.tokens.to(device)
        mask = _full_mask(p, device)
        cache = DynamicCache(config=self.config)
        if p.past is not None:
            for i, (k, v) in enumerate(zip(p.past.keys, p.past.values, strict=True)):
                cache.update(k.transpose(1, 2), v.transpose(1, 2), i)
        # Positions from the mask (the HookedTransformer convention): padding between the
        # cached prefix and these tokens shifts no position.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
        hooks = [] if p.label is None else [("hook_embed", _inject_hook(p.label))]
        with self.model.hooks(fwd_hooks=hooks), self._cache_kwarg():
            logits = self.model(tokens, attention_mask=_attention_4d(mask, tokens.shape[1]),
                                position_ids=positions, cache=cache, use_cache=True,
                                logits_to_keep=p.last)
        kv = None
        if p.keep_kv:
            kv = self._read(cache, tokens.shape[1] + (0 if p.past is None else
                                                      p.past.mask.shape[1]), mask)
        return _promote(logits[:, -p.last:]), kv

    def _read(self, cache: Any, length: int, mask: torch.Tensor) -> PrefixKV:
        layers = list(cache.layers)
        if len(layers) != len(self._attention) or any(
                layer.keys is None or layer.keys.shape[-2] != length for layer in layers):
            raise BackendError(
                "The TransformerBridge did not fill the key/value cache (its attention reads "
                "the cache under a name this transformers version does not pass). Upgrade "
                "transformer-lens, or label without the prefix cache: "
                "PerformanceConfig(cache_prefix=False).")
        return prefix_kv([layer.keys.transpose(1, 2) for layer in layers],
                         [layer.values.transpose(1, 2) for layer in layers], mask)

    @contextmanager
    def _cache_kwarg(self) -> Iterator[None]:
        # transformers >= 5.2x passes the cache to attention as `cache=`; the bridge's
        # reimplemented attention (TransformerLens 3.9) reads `past_key_values=`. Hand it the
        # same object under both names, for these calls only (the user's bridge is left as it
        # was).
        def alias(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
                return args, {**kwargs, "past_key_values": kwargs["cache"]}
            return None

        with ExitStack() as stack:
            for attn in self._attention:
                handle = attn.register_forward_pre_hook(alias, with_kwargs=True)
                stack.callback(handle.remove)
            yield

    def kv_heads(self) -> int:
        return int(getattr(self.config, "num_key_value_heads", None)
                   or self.config.num_attention_heads)


def _attention_4d(mask: Int[torch.Tensor, "batch kv"], n_query: int
                  ) -> Bool[torch.Tensor, "batch 1 query kv"]:
    """Which keys each query sees: causal, tokens only, and every query itself.

    Hugging Face uses a 4-D mask as given. Letting a padding position see itself changes no
    token's output (no token sees padding) but leaves no row fully masked: the bridge's
    attention takes the softmax in float32, where a float64 model's masking value becomes
    -inf and a fully masked row NaN, which would reach the tokens through the values.
    """
    n_kv = mask.shape[1]
    query = torch.arange(n_query, device=mask.device) + (n_kv - n_query)
    key = torch.arange(n_kv, device=mask.device)
    causal = key[None, :] <= query[:, None]
    seen = (causal[None] & mask.bool()[:, None, :]) | (key[None, :] == query[:, None])[None]
    return seen[:, None]


Backend = HookedBackend | BridgeBackend


def is_bridge(model: Any) -> bool:
    """True for a TransformerLens `TransformerBridge` (and subclasses, e.g. SAELens's)."""
    return any(c.__name__ == "TransformerBridge" for c in type(model).__mro__)


def backend_of(model: Any) -> Backend:
    """The backend that runs `model` (module docstring)."""
    return BridgeBackend(model) if is_bridge(model) else HookedBackend(model)
