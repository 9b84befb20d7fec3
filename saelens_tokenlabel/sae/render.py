"""Stage 3: a feature's picks as rating examples (context text, word, activation).

Each picked token becomes its whole-character word (`WordDecoder`) in a window of context.
A word's activation is the largest over the tokens it spans. Contrasts are the feature's own
words where it is silent over the whole word (`contrasts.py`); near-misses are inactive words
from the windows of the activating ones. Examples with the same text and word are one
example (the prompt cannot tell them apart), with the larger activation (else the first
kind: a silent active word next to an active one is a contrast before it is a near-miss).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..records.extra import ExampleRecord
from .config import ExampleConfig
from .examples import RandomPool, Selection
from .words import WordDecoder, WordSpan


@dataclass
class RenderedFeature:
    """One feature's rating examples, with where each came from."""

    feature: int
    examples: list[tuple[str, str, float]] = field(default_factory=list)
    """``(text, word, activation)``."""
    contexts: list[int] = field(default_factory=list)
    """Per example: the corpus context it was taken from (an active word and its near-misses
    share one, and so land in the same split)."""
    kinds: list[str] = field(default_factory=list)
    """Per example: `top`, `quantile`, `contrast`, `near_miss` or `random`."""
    words: dict[tuple[int, ...], dict[str, Any]] = field(default_factory=dict)
    """Subject token ids -> the word shown for them (see `WordDecoder.record`)."""
    dropped: Counter = field(default_factory=Counter)
    """Picks left out, by reason."""
    unspellable: list[str] = field(default_factory=list)
    """A few of the words dropped because the evaluator's tokenizer cannot write them."""

    def rated(self) -> list[tuple[str, str, float, int]]:
        """``(text, word, activation, context)`` for `FeatureData.from_examples`."""
        return [(*e, c) for e, c in zip(self.examples, self.contexts, strict=True)]

    @property
    def n_active(self) -> int:
        return sum(a > 0 for _, _, a in self.examples)

    def drop_note(self) -> str:
        """A sentence on words the evaluator could not be shown, for status messages."""
        n = self.dropped.get("unspellable_word", 0)
        if not n:
            return ""
        return (f" {n} picks were dropped because the evaluator's tokenizer cannot spell their "
                f"words (e.g. {', '.join(map(repr, self.unspellable))}); use an evaluator whose "
                "tokenizer covers them (a byte-level BPE never loses characters).")

    def example_records(self) -> tuple[ExampleRecord, ...]:
        """The examples as kept in results (`FeatureExtra.examples`)."""
        return tuple(ExampleRecord(text=t, word=w, activation=a, kind=k)
                     for (t, w, a), k in zip(self.examples, self.kinds, strict=True))


class _Builder:
    def __init__(self, out: RenderedFeature, decoder: WordDecoder, cfg: ExampleConfig,
                 special: set[int], placeholder: str | None,
                 spellable: Callable[[str], bool] | None) -> None:
        self.out = out
        self.spellable = spellable
        self.decoder = decoder
        self.cfg = cfg
        self.special = special
        self.placeholder = placeholder
        self.index: dict[tuple[str, str], int] = {}

    def add(self, ids: list[int], span: WordSpan, act: float, kind: str, context: int) -> bool:
        if not span.word.strip():
            self.out.dropped["blank_word"] += 1
            return False
        if self.spellable is not None and not self.spellable(span.word):
            # The evaluator would be asked about a word it cannot see (unknown tokens).
            self.out.dropped["unspellable_word"] += 1
            if span.word not in self.out.unspellable and len(self.out.unspellable) < 5:
                self.out.unspellable.append(span.word)
            return False
        text = self.decoder.window(ids, span, self.cfg.window_before, self.cfg.window_after,
                                   self.special)
        if self.placeholder and (self.placeholder in text or self.placeholder in span.word):
            self.out.dropped["contains_label_placeholder"] += 1
            return False
        key = (text, span.word)
        i = self.index.get(key)
        if i is not None:
            if act > self.out.examples[i][2]:
                self.out.examples[i] = (text, span.word, act)
                self.out.kinds[i] = kind
                self.out.contexts[i] = context
            self.out.dropped["duplicate"] += 1
            return False
        self.index[key] = len(self.out.examples)
        self.out.examples.append((text, span.word, act))
        self.out.kinds.append(kind)
        self.out.contexts.append(context)
        sub = tuple(int(t) for t in ids[span.start : span.end])
        if sub not in self.out.words:
            self.out.words[sub] = self.decoder.record(ids, span)
        return True


def _span_act(acts: dict[int, float], span: WordSpan) -> float:
    return max((acts.get(p, 0.0) for p in range(span.start, span.end)), default=0.0)


def render_feature(
    sel: Selection, pool: RandomPool, contexts: dict[int, list[int]], decoder: WordDecoder,
    cfg: ExampleConfig, special: set[int], placeholder: str | None = None,
    spellable: Callable[[str], bool] | None = None,
) -> RenderedFeature:
    """Rating examples of one feature; `contexts` must hold every context it picked.

    `spellable` (e.g. `Evaluator.can_spell`) says whether the evaluator's tokenizer can write
    a word; picks whose word it cannot are dropped and counted (``unspellable_word``).
    """
    out = RenderedFeature(sel.feature)
    b = _Builder(out, decoder, cfg, special, placeholder, spellable)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + sel.feature)

    near: dict[tuple[int, int, int], WordSpan] = {}
    for kind, entries in (("top", sel.top), ("quantile", sel.quantile)):
        for c, p, _ in entries:
            ids = contexts[c]
            acts = sel.context_acts.get(c, {})
            span = decoder.word_at(ids, p)
            b.add(ids, span, _span_act(acts, span), kind, c)
            # Near-miss candidates: inactive words in the same window.
            lo, hi = max(0, p - cfg.window_before), min(len(ids), p + cfg.window_after + 1)
            for q in range(lo, hi):
                if ids[q] in special:
                    continue
                s = decoder.word_at(ids, q)
                if _span_act(acts, s) <= 0 and s.word.strip():
                    near[(c, s.start, s.end)] = s

    _add_contrasts(b, sel, contexts)
    keys = sorted(near)
    taken = 0
    for i in torch.randperm(len(keys), generator=gen).tolist():
        if taken >= cfg.n_near_miss:
            break
        c, _, _ = keys[i]
        taken += b.add(contexts[c], near[keys[i]], 0.0, "near_miss", c)

    taken = 0
    for c, p in pool.tokens:
        if taken >= cfg.n_random:
            break
        ids = contexts[c]
        span = decoder.word_at(ids, p)
        if pool.activation(sel.feature, c, span.start, span.end) > 0:
            continue  # active here: not a random *inactive* example
        taken += b.add(ids, span, 0.0, "random", c)
    return out


def _add_contrasts(b: _Builder, sel: Selection, contexts: dict[int, list[int]]) -> None:
    """Up to `n_contrast` of the feature's contrast picks: first each token id's quota, in
    contexts no other contrast has taken; then the rest, round robin over the token ids."""
    active_words = {w for _, w, a in b.out.examples if a > 0}
    left: dict[int, list[tuple[int, int]]] = {t: [] for t in sel.contrast_quota}
    seen: set[int] = set()
    n = 0
    for t, quota in sel.contrast_quota.items():
        got = 0
        for c, p, tok in sel.contrast:
            if tok != t:
                continue
            if got >= quota or c in seen:
                left[t].append((c, p))
            elif _add_contrast(b, sel, contexts, (c, p), active_words):
                got += 1
                seen.add(c)
        n += got
    queues = [iter(v) for v in left.values()]
    while queues and n < b.cfg.n_contrast:
        for q in list(queues):
            pick = next(q, None)
            if pick is None:
                queues.remove(q)
            elif n < b.cfg.n_contrast:
                n += _add_contrast(b, sel, contexts, pick, active_words)


def _add_contrast(b: _Builder, sel: Selection, contexts: dict[int, list[int]],
                  pick: tuple[int, int], active_words: set[str]) -> bool:
    """One contrast, unless the feature fires somewhere on its word, or the word is merged
    byte fragments of another character than the ones it fires on (the same byte token ends
    many characters)."""
    c, p = pick
    ids = contexts[c]
    span = b.decoder.word_at(ids, p)
    if _span_act(sel.context_acts.get(c, {}), span) > 0:
        return False
    if span.merged and span.word not in active_words:
        return False
    return b.add(ids, span, 0.0, "contrast", c)


def contexts_needed(sel: Selection, pool: RandomPool) -> set[int]:
    return ({c for c, _, _ in sel.top + sel.quantile} | {c for c, _ in pool.tokens}
            | {c for c, _, _ in sel.contrast})
