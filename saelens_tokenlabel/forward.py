"""Evaluator forward passes with the label injected at `hook_embed`.

Two paths give the same logits:

* full: the whole rating prompt every time (left-padded, explicit attention mask);
* cached: the prefix (everything before the label) was run once into a frozen TransformerLens
  KV cache (`PrefixCache`); each step runs only the suffix (label slots and the tail).

Rotary positions come from the attention mask in both, so padding never shifts positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from .evaluator import EncodedExample, Evaluator


def _device(evaluator: Evaluator) -> torch.device:
    return evaluator.model.W_E.device


def _pad_id(evaluator: Evaluator) -> int:
    pad = evaluator.tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def left_pad(
    seqs: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Left-pad token lists to one length; returns tokens and the attention mask."""
    length = length or max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            tokens[i, length - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, length - len(s) :] = 1
    return tokens, mask


def _final_logits(evaluator: Evaluator, resid: Float[torch.Tensor, "batch pos d_model"]
                  ) -> Float[torch.Tensor, "batch d_vocab"]:
    # Unembed the last position only: the prediction is read there, and a full
    # [batch, pos, d_vocab] unembed would dominate memory for a 128k vocabulary.
    from transformer_lens.utilities import apply_softcap

    model = evaluator.model
    last = resid[:, -1:]
    if model.cfg.normalization_type is not None:
        last = model.ln_final(last)
    logits = apply_softcap(model.unembed(last), model.cfg.output_logits_soft_cap)
    # Softmax and loss in at least fp32, whatever the evaluator's dtype (bf16 on GPU).
    logits = logits[:, 0]
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def run_with_label(
    evaluator: Evaluator,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"] | None,
    slot_start: int,
    label_embeds: Float[torch.Tensor, "batch slot d_model"] | None,
    past_kv_cache: TransformerLensKeyValueCache | None = None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Logits at the last position, with `label_embeds` replacing the embeddings of the label
    slots ``[slot_start, slot_start + n_slots)``."""
    model = evaluator.model
    device = _device(evaluator)
    tokens = tokens.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    hooks = []
    if label_embeds is not None:
        n_slots = label_embeds.shape[1]

        def inject(embed: torch.Tensor, hook: object) -> torch.Tensor:
            e = label_embeds.to(device=embed.device, dtype=embed.dtype)
            return torch.cat(
                [embed[:, :slot_start], e, embed[:, slot_start + n_slots :]], dim=1
            )

        hooks.append(("hook_embed", inject))
    with model.hooks(fwd_hooks=hooks):
        resid = model(
            tokens,
            attention_mask=attention_mask,
            past_kv_cache=past_kv_cache,
            stop_at_layer=model.cfg.n_layers,
        )
    return _final_logits(evaluator, resid)


def full_prompt_logits(
    evaluator: Evaluator,
    examples: Sequence[EncodedExample],
    label_embeds: Float[torch.Tensor, "batch slot d_model"],
) -> Float[torch.Tensor, "batch d_vocab"]:
    """The uncached path: the whole prompt, label slots filled by `label_embeds`."""
    n_slots = label_embeds.shape[1]
    suffix = evaluator.suffix_ids(n_slots, fill_id=_pad_id(evaluator))
    tokens, mask = left_pad([list(e.prefix_ids) + suffix for e in examples], _pad_id(evaluator))
    return run_with_label(evaluator, tokens, mask, tokens.shape[1] - len(suffix), label_embeds)


def hard_prompt_logits(
    evaluator: Evaluator, examples: Sequence[EncodedExample], label_ids: Sequence[int]
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Reference: the prompt with the label written in as ordinary tokens, no hook."""
    seqs = [evaluator.prompt_ids(e, list(label_ids)) for e in examples]
    tokens, mask = left_pad(seqs, _pad_id(evaluator))
    return run_with_label(evaluator, tokens, mask, 0, None)


@dataclass
class PrefixCache:
    """The prefix of every example, run once under no_grad.

    Holds per-layer keys/values (left-padded to one length), the attention mask, and
    ``log_q``: the evaluator's next-token log-distribution at the last prefix position, i.e.
    its expectation for the first label token. None of it depends on the label.
    """

    keys: list[torch.Tensor] | None
    """Per layer ``[n_examples, prefix_len, n_kv_heads, d_head]``; None when not kept."""
    values: list[torch.Tensor] | None
    mask: Int[torch.Tensor, "n_examples prefix_len"]
    log_q: Float[torch.Tensor, "n_examples d_vocab"]

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        evaluator: Evaluator,
        examples: Sequence[EncodedExample],
        batch_size: int = 64,
        keep_kv: bool = True,
    ) -> PrefixCache:
        model = evaluator.model
        device = _device(evaluator)
        tokens, mask = left_pad([e.prefix_ids for e in examples], _pad_id(evaluator))
        keys: list[list[torch.Tensor]] = [[] for _ in range(model.cfg.n_layers)]
        values: list[list[torch.Tensor]] = [[] for _ in range(model.cfg.n_layers)]
        log_q = []
        for start in range(0, len(examples), batch_size):
            t = tokens[start : start + batch_size].to(device)
            m = mask[start : start + batch_size].to(device)
            cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, t.shape[0])
            resid = model(t, attention_mask=m, past_kv_cache=cache,
                          stop_at_layer=model.cfg.n_layers)
            log_q.append(torch.log_softmax(_final_logits(evaluator, resid), dim=-1))
            if keep_kv:
                for i, entry in enumerate(cache.entries):
                    keys[i].append(entry.past_keys)
                    values[i].append(entry.past_values)
        return cls(
            keys=[torch.cat(k) for k in keys] if keep_kv else None,
            values=[torch.cat(v) for v in values] if keep_kv else None,
            mask=mask.to(device),
            log_q=torch.cat(log_q),
        )

    def select(self, rows: Int[torch.Tensor, " batch"]) -> TransformerLensKeyValueCache:
        """A frozen TL KV cache holding the prefixes of `rows` (one per batch row)."""
        if self.keys is None or self.values is None:
            raise RuntimeError("This PrefixCache was built with keep_kv=False.")
        rows = rows.to(self.mask.device)
        entries = [
            TransformerLensKeyValueCacheEntry(k[rows], v[rows], frozen=True)
            for k, v in zip(self.keys, self.values, strict=True)
        ]
        return TransformerLensKeyValueCache(entries, self.mask[rows], frozen=True)


def cached_logits(
    evaluator: Evaluator,
    cache: PrefixCache,
    rows: Int[torch.Tensor, " batch"],
    label_embeds: Float[torch.Tensor, "batch slot d_model"],
) -> Float[torch.Tensor, "batch d_vocab"]:
    """The cached path: only the suffix runs, attending to the frozen prefix cache."""
    n_slots = label_embeds.shape[1]
    suffix = torch.tensor(evaluator.suffix_ids(n_slots, fill_id=_pad_id(evaluator)))
    tokens = suffix.expand(len(rows), -1)
    mask = torch.ones_like(tokens)
    return run_with_label(evaluator, tokens, mask, 0, label_embeds, cache.select(rows))
