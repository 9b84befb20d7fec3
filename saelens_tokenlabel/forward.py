"""Evaluator forward passes with the label injected at `hook_embed`.

Two paths give the same logits:

* full: the whole rating prompt every time (left-padded, explicit attention mask);
* cached: the prefix (everything before the label) was run once into a frozen TransformerLens
  KV cache (`PrefixCache`); each step runs only the suffix (label slots and the tail).

Rotary positions come from the attention mask in both, so padding never shifts positions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from .evaluator import EncodedExample, Evaluator
from .suffix import PrefixKV, SuffixRunner, prefix_kv, unsupported

log = logging.getLogger(__name__)


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


_SLOW_LOGGED: set[str] = set()


def _runner(evaluator: Evaluator) -> SuffixRunner | None:
    """The lean suffix forward for `evaluator`, or None (logged once per reason)."""
    why = unsupported(evaluator.model)
    if why is None:
        return SuffixRunner(evaluator.model, list(evaluator.suffix_tail_ids))
    if why not in _SLOW_LOGGED:
        _SLOW_LOGGED.add(why)
        log.info("cached steps run through TransformerLens's modules, not the lean suffix "
                 "forward: %s", why)
    return None


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


class PrefixCache:
    """The prefix of every example (all tokens before the label), run once under no_grad.

    * The part every prefix shares (BOS, system prompt, the user turn's opening) runs once,
      ``[1, shared_len]``, and is broadcast to each batch with ``.expand`` (no copy).
    * The rest of each prefix is left-padded to one length and runs once per example,
      attending to the shared part. Padding sits between the two parts; rotary positions come
      from the attention mask, so no position shifts.
    * ``log_q``: the evaluator's next-token log-distribution at the last prefix position, i.e.
      its expectation for the first label token. Computed in the same pass, once.

    With `max_resident` set, at most that many examples' keys/values stay on the device:
    the least recently used are evicted and recomputed when sampled again (memory budget).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        examples: Sequence[EncodedExample],
        batch_size: int = 64,
        keep_kv: bool = True,
        max_resident: int | None = None,
        fast: bool = True,
    ) -> None:
        if not examples:
            raise ValueError("PrefixCache needs at least one example.")
        self.evaluator = evaluator
        model = evaluator.model
        self.device = _device(evaluator)
        self.batch_size = batch_size
        self.keep_kv = keep_kv
        self.runner = _runner(evaluator) if keep_kv and fast else None
        """The lean suffix forward (`suffix.SuffixRunner`), or None: TransformerLens's."""
        seqs = [e.prefix_ids for e in examples]
        # Leave every example at least one token of its own: q is read at its last token.
        self.shared_len = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
        rest = [s[self.shared_len :] for s in seqs]
        self.rest_tokens, self.rest_mask = left_pad(rest, _pad_id(evaluator))
        self.n_examples = len(examples)

        with torch.no_grad():
            shared = TransformerLensKeyValueCache.init_cache(model.cfg, self.device, 1)
            if self.shared_len:
                model(torch.tensor([list(seqs[0][: self.shared_len])], device=self.device),
                      attention_mask=torch.ones(1, self.shared_len, dtype=torch.long,
                                                device=self.device),
                      past_kv_cache=shared, stop_at_layer=model.cfg.n_layers)
        self.shared_keys = [e.past_keys for e in shared.entries]
        self.shared_values = [e.past_values for e in shared.entries]

        n = len(examples)
        cap = n if max_resident is None else max(1, min(n, max_resident))
        self.capacity = cap if keep_kv else 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slot_of = torch.full((n,), -1, dtype=torch.long)
        self.example_in = torch.full((max(self.capacity, 1),), -1, dtype=torch.long)
        self.last_used = torch.zeros(max(self.capacity, 1), dtype=torch.long)
        self._clock = 0
        self.recomputed = 0
        """Examples whose keys/values were recomputed after eviction (budget misses)."""
        log_q = []
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(n, start + batch_size))
            keys, values, lq = self._run_rest(rows)
            log_q.append(lq)
            if keep_kv:
                self._store(rows[: max(0, self.capacity - start)], keys, values)
        # log q is small next to keys/values, except for huge vocabularies and many examples:
        # under a budget it waits on the CPU and only the batch's rows travel.
        self.log_q_all = torch.cat(log_q).to("cpu" if max_resident is not None else self.device)

    # ------------------------------------------------------------------ internals
    @torch.no_grad()
    def _run_rest(self, rows: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                     torch.Tensor]:
        model = self.evaluator.model
        b = len(rows)
        t = self.rest_tokens[rows].to(self.device)
        m = self.rest_mask[rows].to(self.device)
        cache = self._shared_cache(b)
        cache.unfreeze()
        resid = model(t, attention_mask=m, past_kv_cache=cache, stop_at_layer=model.cfg.n_layers)
        lq = torch.log_softmax(_final_logits(self.evaluator, resid), dim=-1)
        keys = [e.past_keys[:, self.shared_len :] for e in cache.entries]
        values = [e.past_values[:, self.shared_len :] for e in cache.entries]
        return keys, values, lq

    def _shared_cache(self, b: int) -> TransformerLensKeyValueCache:
        entries = [
            TransformerLensKeyValueCacheEntry(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1),
                                              frozen=True)
            for k, v in zip(self.shared_keys, self.shared_values, strict=True)
        ]
        mask = torch.ones(b, self.shared_len, dtype=torch.long, device=self.device)
        return TransformerLensKeyValueCache(entries, mask, frozen=True)

    def _store(self, rows: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
               protect: torch.Tensor | None = None) -> None:
        if len(rows) == 0:
            return
        if not self.keys:
            self.keys = [k.new_empty((self.capacity, *k.shape[1:])) for k in keys]
            self.values = [v.new_empty((self.capacity, *v.shape[1:])) for v in values]
        free = torch.nonzero(self.example_in == -1).flatten()
        if len(free) < len(rows):
            # Evict the least recently used slots that the current rows do not need.
            busy = torch.isin(self.example_in, rows if protect is None else protect)
            order = torch.argsort(self.last_used.masked_fill(busy, torch.iinfo(torch.long).max))
            victims = order[: len(rows) - len(free)]
            self.slot_of[self.example_in[victims]] = -1
            self.example_in[victims] = -1
            free = torch.cat([free, victims])
        slots = free[: len(rows)]
        for i in range(len(keys)):
            self.keys[i][slots.to(self.device)] = keys[i][: len(rows)]
            self.values[i][slots.to(self.device)] = values[i][: len(rows)]
        self.example_in[slots] = rows
        self.slot_of[rows] = slots
        self.last_used[slots] = self._clock

    # ------------------------------------------------------------------ public
    @property
    def log_q(self) -> torch.Tensor:
        return self.log_q_all

    def bytes_per_example(self) -> int:
        cfg = self.evaluator.model.cfg
        heads = cfg.n_key_value_heads or cfg.n_heads
        elem = self.evaluator.model.W_E.element_size()
        return 2 * cfg.n_layers * self.rest_tokens.shape[1] * heads * cfg.d_head * elem

    def gather(self, rows: Int[torch.Tensor, " batch"]) -> PrefixKV:
        """The prefixes of `rows` (one per batch row): keys and values per layer, shared part
        first, and which positions are tokens."""
        if not self.keep_kv:
            raise RuntimeError("This PrefixCache was built with keep_kv=False.")
        rows = rows.cpu()
        self._clock += 1
        uniq = torch.unique(rows)
        missing = uniq[self.slot_of[uniq] == -1]
        if len(uniq) > self.capacity:
            # The batch alone exceeds the budget: compute it, store nothing.
            keys, values, _ = self._run_rest(rows)
            self.recomputed += len(rows)
        else:
            if len(missing):
                k, v, _ = self._run_rest(missing)
                self.recomputed += len(missing)
                self._store(missing, k, v, protect=uniq)
            slots = self.slot_of[rows]
            self.last_used[slots] = self._clock
            slots = slots.to(self.device)
            keys = [k[slots] for k in self.keys]
            values = [v[slots] for v in self.values]
        b = len(rows)
        keys = [torch.cat([sk.expand(b, -1, -1, -1), k], dim=1)
                for sk, k in zip(self.shared_keys, keys, strict=True)]
        values = [torch.cat([sv.expand(b, -1, -1, -1), v], dim=1)
                  for sv, v in zip(self.shared_values, values, strict=True)]
        mask = torch.cat([torch.ones(b, self.shared_len, dtype=torch.long),
                          self.rest_mask[rows]], dim=1).to(self.device)
        return prefix_kv(keys, values, mask)

    def select(self, rows: Int[torch.Tensor, " batch"]) -> TransformerLensKeyValueCache:
        """A frozen TL KV cache holding the prefixes of `rows` (one per batch row)."""
        kv = self.gather(rows)
        entries = [TransformerLensKeyValueCacheEntry(k, v, frozen=True)
                   for k, v in zip(kv.keys, kv.values, strict=True)]
        return TransformerLensKeyValueCache(entries, kv.mask.long(), frozen=True)

    def log_q_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.log_q_all[rows.to(self.log_q_all.device)].to(self.device)

    @classmethod
    def build(
        cls,
        evaluator: Evaluator,
        examples: Sequence[EncodedExample],
        batch_size: int = 64,
        keep_kv: bool = True,
        max_resident: int | None = None,
        fast: bool = True,
    ) -> PrefixCache:
        return cls(evaluator, examples, batch_size, keep_kv, max_resident, fast)


def cached_logits(
    evaluator: Evaluator,
    cache: PrefixCache,
    rows: Int[torch.Tensor, " batch"],
    label_embeds: Float[torch.Tensor, "batch slot d_model"],
    columns: Int[torch.Tensor, " k"] | None = None,
) -> Float[torch.Tensor, "batch cols"]:
    """The cached path: only the suffix runs, attending to the frozen prefix cache (through
    the lean `suffix.SuffixRunner` where the cache has one). With `columns`, the logits of
    those tokens only."""
    if cache.runner is not None:
        return cache.runner.logits(cache.gather(rows), label_embeds, columns)
    n_slots = label_embeds.shape[1]
    suffix = torch.tensor(evaluator.suffix_ids(n_slots, fill_id=_pad_id(evaluator)))
    tokens = suffix.expand(len(rows), -1)
    mask = torch.ones_like(tokens)
    logits = run_with_label(evaluator, tokens, mask, 0, label_embeds, cache.select(rows))
    return logits if columns is None else logits[:, columns.to(logits.device)]


@torch.no_grad()
def conditional_log_q(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache | None,
    rows: Int[torch.Tensor, " batch"],
    label_ids: Int[torch.Tensor, "batch j"],
) -> Float[torch.Tensor, "batch j d_vocab"]:
    """The evaluator's next-token log-distributions after the prefix and the hard label tokens
    `label_ids`: entry ``[:, i]`` is its expectation for label slot ``i + 1`` given slots
    ``0..i``. With a `cache` (keeping keys/values) only the label tokens run."""
    model = evaluator.model
    device = _device(evaluator)
    label_ids = label_ids.to(device)
    if cache is not None and cache.keep_kv:
        tokens = label_ids
        mask = torch.ones_like(tokens)
        kv = cache.select(rows)
    else:
        seqs = [list(encoded[int(r)].prefix_ids) + ids
                for r, ids in zip(rows.tolist(), label_ids.tolist(), strict=True)]
        tokens, mask = left_pad(seqs, _pad_id(evaluator))
        tokens, mask, kv = tokens.to(device), mask.to(device), None
    logits = model(tokens, attention_mask=mask, past_kv_cache=kv)[:, -label_ids.shape[1] :]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits, dim=-1)
