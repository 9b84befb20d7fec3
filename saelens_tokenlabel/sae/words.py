"""Cross-tokenizer words: a subject token as the text the evaluator is shown.

The subject model and the evaluator have different tokenizers, so a word crosses over as
text. A byte-level BPE (GPT-2) splits a character outside its merges, such as most Chinese
characters, into several byte tokens; each alone decodes to U+FFFD. `WordDecoder` merges
such a token with its fragment neighbours until the span decodes to whole characters, and
records what it merged. Leading whitespace is stripped, or kept, by one switch for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class WordSpan:
    """The whole-character span of subject tokens around one token, and its text."""

    start: int
    """First token position of the span."""
    end: int
    """One past the last token position."""
    text: str
    """The span decoded, leading space included."""
    word: str
    """What the evaluator is shown (`text`, stripped when stripping)."""

    @property
    def merged(self) -> bool:
        return self.end - self.start > 1

    @property
    def complete(self) -> bool:
        """False when fragments could not be merged into whole characters."""
        return REPLACEMENT not in self.text


class WordDecoder:
    """Decodes subject tokens for the evaluator, merging byte fragments."""

    def __init__(self, tokenizer: Any, strip: bool = True, max_merge: int = 8) -> None:
        self.tokenizer = tokenizer
        self.strip = strip
        self.max_merge = max_merge
        self._pieces: dict[int, str] = {}
        self._spans: dict[tuple[int, ...], str] = {}

    def decode(self, ids: Sequence[int]) -> str:
        key = tuple(int(i) for i in ids)
        text = self._spans.get(key)
        if text is None:
            text = self.tokenizer.decode(list(key), skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            # A bounded memo of short spans: fragment spans recur as windows slide.
            if len(key) <= 2 * self.max_merge + 1 and len(self._spans) < 1 << 16:
                self._spans[key] = text
        return text

    def piece(self, token_id: int) -> str:
        """The token decoded alone (cached)."""
        token_id = int(token_id)
        if token_id not in self._pieces:
            self._pieces[token_id] = self.decode([token_id])
        return self._pieces[token_id]

    def is_fragment(self, token_id: int) -> bool:
        return REPLACEMENT in self.piece(token_id)

    def show(self, text: str) -> str:
        return text.strip() if self.strip else text

    def word_at(self, ids: Sequence[int], pos: int) -> WordSpan:
        """The smallest span around `pos` that decodes to whole characters.

        Only neighbouring fragments can join (a token that decodes alone holds whole
        characters, so no character needs it). Among the spans of up to `max_merge` fragment
        neighbours on each side, the one with the fewest U+FFFD wins, then the shortest: a
        lone byte decodes to U+FFFD whether its character continues left or right, so both
        directions are tried. A genuine U+FFFD in the text stays a one-token span.
        """
        text = self.piece(ids[pos])
        if REPLACEMENT not in text:
            return WordSpan(pos, pos + 1, text, self.show(text))
        lo = pos
        while lo > 0 and pos - lo < self.max_merge and self.is_fragment(ids[lo - 1]):
            lo -= 1
        hi = pos + 1
        while hi < len(ids) and hi - pos - 1 < self.max_merge and self.is_fragment(ids[hi]):
            hi += 1
        best = (text.count(REPLACEMENT), 1, pos, pos + 1, text)
        for length in range(2, hi - lo + 1):
            for start in range(max(lo, pos - length + 1), min(pos, hi - length) + 1):
                t = self.decode(ids[start : start + length])
                cand = (t.count(REPLACEMENT), length, start, start + length, t)
                if cand[:2] < best[:2]:
                    best = cand
            if best[0] == 0:
                break
        _, _, start, end, text = best
        return WordSpan(start, end, text, self.show(text))

    def window(self, ids: Sequence[int], span: WordSpan, before: int, after: int,
               special_ids: set[int]) -> str:
        """The context shown around a word: up to `before`/`after` tokens beyond the span,
        cut at whole characters, special tokens left out."""
        lo = max(0, span.start - before)
        hi = min(len(ids), span.end + after)
        # Never cut a character in two at the window's edges.
        while lo < span.start and self.word_at(ids, lo).start < lo:
            lo += 1
        while hi > span.end and self.word_at(ids, hi - 1).end > hi:
            hi -= 1
        kept = [t for t in ids[lo:hi] if int(t) not in special_ids]
        return self.decode(kept).strip()

    def record(self, ids: Sequence[int], span: WordSpan) -> dict[str, Any]:
        """The mapping kept in results: subject token ids and pieces -> evaluator word."""
        sub = [int(t) for t in ids[span.start : span.end]]
        return {
            "subject_ids": sub,
            "subject_tokens": self.tokenizer.convert_ids_to_tokens(sub),
            "text": span.text,
            "word": span.word,
            "merged": span.merged,
            "complete": span.complete,
        }
