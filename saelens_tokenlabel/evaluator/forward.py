"""Evaluator forward passes with the label injected at `hook_embed`.

Two paths give the same logits:

* full: the whole rating prompt every time (left-padded, explicit attention mask);
* cached: the prefix (everything before the label) was run once and its keys/values kept
  (`PrefixCache`); each step runs only the suffix (label slots and the tail).

Rotary positions come from the attention mask in both, so padding never shifts positions.
The model itself is run by its `backend.Backend`: a HookedTransformer with TransformerLens's KV
cache, or a TransformerBridge with its Hugging Face model's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from .backend import BackendError, Pass
from .model import EncodedExample, Evaluator
from .suffix import PrefixKV, SuffixRunner, local_window, prefix_kv, unsupported

log = logging.getLogger(__name__)


def _device(evaluator: Evaluator) -> torch.device:
    return evaluator.backend.device


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


def run_with_label(
    evaluator: Evaluator,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"] | None,
    slot_start: int,
    label_embeds: Float[torch.Tensor, "batch slot d_model"] | None,
    past: PrefixKV | None = None,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Logits at the last position, with `label_embeds` replacing the embeddings of the label
    slots ``[slot_start, slot_start + n_slots)``, after the cached prefix `past` if any."""
    label = None if label_embeds is None else (slot_start, label_embeds)
    logits, _ = evaluator.backend.run(Pass(tokens, attention_mask, past, label))
    return logits[:, -1]


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


_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


def _runner(evaluator: Evaluator) -> SuffixRunner | None:
    """The lean suffix forward for `evaluator`, or None (logged once per reason)."""
    why = unsupported(evaluator.model)
    if why is None:
        return SuffixRunner(evaluator.model, list(evaluator.suffix_tail_ids))
    _log_once(f"cached steps run through the model's own modules ({evaluator.backend.kind}), "
              f"not the lean suffix forward: {why}")
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


LABEL_ROOM = 32
"""Label slots a local attention window must leave room for, beside the longest prefix and
the prompt's tail, for the prefix cache to share the part every prefix has in common."""


def _window_bites(evaluator: Evaluator, seqs: Sequence[Sequence[int]]) -> bool:
    """Whether a local attention window of the evaluator could cut into a prompt.

    TransformerLens counts a window in cache slots, padding included: with the padding between
    the shared part and each prefix's rest, a window reaching across it would see fewer tokens
    than the model sees on the whole prompt. Then nothing is shared (the padding goes in
    front, outside every window), and the log says so once."""
    window = local_window(evaluator.model)
    longest = max(len(s) for s in seqs) + len(evaluator.suffix_tail_ids) + LABEL_ROOM
    if window is None or window >= longest:
        return False
    _log_once(f"the prefix cache shares no part of the prompts: the local attention window "
              f"({window} tokens) is shorter than the longest prompt with a label of up to "
              f"{LABEL_ROOM} tokens ({longest}), and TransformerLens would count the padding "
              "between the shared part and the rest inside it")
    return True


class PrefixCache:
    """The prefix of every example (all tokens before the label), run once under no_grad.

    * The part every prefix shares (BOS, system prompt, the user turn's opening) runs once,
      ``[1, shared_len]``, and is broadcast to each batch with ``.expand`` (no copy).
    * The rest of each prefix is left-padded to one length and runs once per example,
      attending to the shared part. Padding sits between the two parts; rotary positions come
      from the attention mask, so no position shifts. A local attention window that could
      reach across that padding would count it (TransformerLens measures windows in cache
      slots): then nothing is shared (`_window_bites`).
    * ``log_q``: the evaluator's next-token log-distribution at the last prefix position, i.e.
      its expectation for the first label token. Computed in the same pass, once.

    With `max_resident` set, at most that many examples' keys/values stay on the device:
    the least recently used are evicted and recomputed when sampled again (memory budget).
    """

    keys: list[torch.Tensor]
    """Per layer, the resident examples' prefix keys (`capacity` slots)."""
    values: list[torch.Tensor]
    """Per layer, their values."""

    def __init__(
        self,
        evaluator: Evaluator,
        examples: Sequence[EncodedExample],
        batch_size: int = 64,
        keep_kv: bool = True,
        max_resident: int | None = None,
        fast: bool = True,
        lean_prefix: bool = True,
    ) -> None:
        if not examples:
            raise ValueError("PrefixCache needs at least one example.")
        self.evaluator = evaluator
        self.device = _device(evaluator)
        self.batch_size = batch_size
        self.keep_kv = keep_kv
        self.runner = _runner(evaluator) if keep_kv and fast else None
        """The lean suffix forward (`suffix.SuffixRunner`), or None: TransformerLens's."""
        self.lean_prefix = lean_prefix and self.runner is not None
        """The prefix pass through the lean forward too (False: through the model's modules,
        as before it had one; the benchmark's "before")."""
        seqs = [e.prefix_ids for e in examples]
        # Leave every example at least one token of its own: q is read at its last token.
        self.shared_len = min(_common_prefix_len(seqs), min(len(s) for s in seqs) - 1)
        if self.shared_len and _window_bites(evaluator, seqs):
            self.shared_len = 0
        self.prefixes = seqs
        rest = [s[self.shared_len :] for s in seqs]
        self.rest_tokens, self.rest_mask = left_pad(rest, _pad_id(evaluator))
        self.n_examples = len(examples)

        self.shared_keys: list[torch.Tensor] = []
        self.shared_values: list[torch.Tensor] = []
        self._allocate(max_resident)
        try:
            log_q = self._run_all()
        except BackendError as err:
            # The model cannot keep a cache: say so once, and run whole prompts instead.
            _log_once(f"the prefix cache is off, every pass runs the whole prompt: {err}")
            self.keep_kv, self.runner, self.capacity = False, None, 0
            self.lean_prefix = False
            self.keys, self.values = [], []
            self.shared_keys, self.shared_values = [], []
            log_q = self._run_all()
        # log q is small next to keys/values, except for huge vocabularies and many examples:
        # under a budget it waits on the CPU and only the batch's rows travel.
        self.log_q_all = log_q.to("cpu" if max_resident is not None else self.device)

    def _allocate(self, max_resident: int | None) -> None:
        n = self.n_examples
        cap = n if max_resident is None else max(1, min(n, max_resident))
        self.capacity = cap if self.keep_kv else 0
        self.keys = []
        self.values = []
        self.slot_of = torch.full((n,), -1, dtype=torch.long)
        self.example_in = torch.full((max(self.capacity, 1),), -1, dtype=torch.long)
        self.last_used = torch.zeros(max(self.capacity, 1), dtype=torch.long)
        self._clock = 0
        self.recomputed = 0
        """Examples whose keys/values were recomputed after eviction (budget misses)."""

    def _run_all(self) -> torch.Tensor:
        """The prefix pass of every example: log q (in example order), and keys/values into
        the store (the first `capacity` examples'). The lean pass takes the examples by
        length, each batch padded only to its own longest."""
        if self.keep_kv and self.shared_len:
            self.shared_keys, self.shared_values = self._run_shared(
                self.prefixes[0][: self.shared_len])
        order = (torch.argsort(self.rest_mask.sum(1), stable=True) if self.lean_prefix
                 else torch.arange(self.n_examples))
        log_q = []
        for start in range(0, self.n_examples, self.batch_size):
            rows = order[start : start + self.batch_size]
            keys, values, lq = self._run_rest(rows)
            log_q.append(lq)
            if self.keep_kv and self.capacity < self.n_examples:
                # Under a memory budget, the first `capacity` examples stay resident.
                keep = rows < self.capacity
                at = keep.to(self.device)
                self._store(rows[keep], [k[at] for k in keys], [v[at] for v in values])
            elif self.keep_kv:
                self._store(rows, keys, values)
        return torch.cat(log_q)[torch.argsort(order).to(log_q[0].device)]

    # ------------------------------------------------------------------ internals
    @torch.no_grad()
    def _run_shared(self, shared: Sequence[int]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Keys/values of the part every prefix shares, ``[1, shared_len]``."""
        tokens = torch.tensor([list(shared)], dtype=torch.long)
        if self.lean_prefix:
            assert self.runner is not None
            keys, values, _ = self.runner.prefix(None, tokens, torch.ones_like(tokens))
            return keys, values
        _, kv = self.evaluator.backend.run(Pass(tokens, keep_kv=True))
        assert kv is not None  # keep_kv
        return kv.keys, kv.values

    @torch.no_grad()
    def _run_rest(self, rows: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                     torch.Tensor]:
        backend = self.evaluator.backend
        if not self.keep_kv:
            # No keys/values kept: the whole prefix, left-padded, for log q only.
            tokens, mask = left_pad([list(self.prefixes[int(r)]) for r in rows],
                                    _pad_id(self.evaluator))
            logits, _ = backend.run(Pass(tokens, mask))
            return [], [], torch.log_softmax(logits[:, -1], dim=-1)
        if self.lean_prefix:
            assert self.runner is not None
            # The lean forward: the same keys, values and logits as TransformerLens's pass,
            # without the columns that are padding in every row (positions come from the
            # mask); the keys and values padded back to the store's width.
            mask = self.rest_mask[rows]
            width = int(mask.sum(1).max())
            keys, values, logits = self.runner.prefix(self._shared(len(rows)),
                                                      self.rest_tokens[rows][:, -width:],
                                                      mask[:, -width:])
            pad = (0, 0, 0, 0, mask.shape[1] - width, 0)
            return ([F.pad(k, pad) for k in keys], [F.pad(v, pad) for v in values],
                    torch.log_softmax(logits, dim=-1))
        logits, kv = backend.run(Pass(self.rest_tokens[rows], self.rest_mask[rows],
                                      self._shared(len(rows)), keep_kv=True))
        assert kv is not None  # keep_kv
        keys = [k[:, self.shared_len :] for k in kv.keys]
        values = [v[:, self.shared_len :] for v in kv.values]
        return keys, values, torch.log_softmax(logits[:, -1], dim=-1)

    def _shared(self, b: int) -> PrefixKV | None:
        """The shared part, broadcast to `b` rows with ``.expand`` (no copy)."""
        if not self.shared_len:
            return None
        return prefix_kv([k.expand(b, -1, -1, -1) for k in self.shared_keys],
                         [v.expand(b, -1, -1, -1) for v in self.shared_values],
                         torch.ones(b, self.shared_len, dtype=torch.long, device=self.device))

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
        heads = self.evaluator.backend.kv_heads()
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
        if self.shared_len:
            keys = [torch.cat([sk.expand(b, -1, -1, -1), k], dim=1)
                    for sk, k in zip(self.shared_keys, keys, strict=True)]
            values = [torch.cat([sv.expand(b, -1, -1, -1), v], dim=1)
                      for sv, v in zip(self.shared_values, values, strict=True)]
        mask = torch.cat([torch.ones(b, self.shared_len, dtype=torch.long),
                          self.rest_mask[rows]], dim=1).to(self.device)
        return prefix_kv(keys, values, mask)

    def log_q_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.log_q_all[rows.to(self.log_q_all.device)].to(self.device)


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
    logits = run_with_label(evaluator, tokens, mask, 0, label_embeds, cache.gather(rows))
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
    label_ids = label_ids.to(_device(evaluator))
    n = label_ids.shape[1]
    if cache is not None and cache.keep_kv:
        p = Pass(label_ids, past=cache.gather(rows), last=n)
    else:
        seqs = [list(encoded[int(r)].prefix_ids) + ids
                for r, ids in zip(rows.tolist(), label_ids.tolist(), strict=True)]
        p = Pass(*left_pad(seqs, _pad_id(evaluator)), last=n)
    logits, _ = evaluator.backend.run(p)
    return torch.log_softmax(logits, dim=-1)
