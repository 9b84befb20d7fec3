"""Typed records of what a result carries beyond its label (`LabelResult.extra`).

`FeatureExtra` is the type of `LabelResult.extra`. Its JSON layout is the plain dict older
versions wrote (and still write)::

    {"message": str,                                  # results without a label: why
     "activation": {"max", "n_active_tokens", "frequency"},
     "example_counts": {kind: n}, "dropped": {reason: n},
     "words": [{"subject_ids", "subject_tokens", "text", "word", "merged", "complete"}],
     "merged_words": n,
     "examples": [{"text", "word", "activation", "kind"}],
     "output_side": {"promoted": [[token, logit], ...], "suppressed": [...]},
     "coherence_config": {...}}

every key optional; keys it does not know (or cannot read) are kept in `FeatureExtra.other`
and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .serial import Record, RecordError, field_types, from_plain


# ---------------------------------------------------------------------- extra's records
@dataclass(frozen=True)
class ActivationStats(Record):
    """How the feature fires on the corpus."""

    max: float | None
    """Largest activation (None: it was not finite)."""
    n_active_tokens: int
    """Corpus tokens where it is > 0."""
    frequency: float | None
    """`n_active_tokens` over the corpus's tokens."""


@dataclass(frozen=True)
class WordRecord(Record):
    """One subject-token word as the evaluator was shown it (`WordDecoder.record`)."""

    subject_ids: tuple[int, ...]
    """The subject tokens the word spans."""
    subject_tokens: tuple[str, ...]
    """Their token strings (the subject tokenizer's pieces)."""
    text: str
    """The span decoded, leading space included."""
    word: str
    """What the evaluator was shown."""
    merged: bool
    """Whether several subject tokens (byte fragments) were merged into the word."""
    complete: bool
    """False when fragments could not be merged into whole characters."""


@dataclass(frozen=True)
class ExampleRecord(Record):
    """One rated example (`RenderedFeature.example_records`)."""

    text: str
    """The context shown to the evaluator."""
    word: str
    """The word rated in it."""
    activation: float | None
    """The feature's activation on the word (the largest over its tokens)."""
    kind: str
    """Where it came from: ``top``, ``quantile``, ``contrast``, ``near_miss`` or ``random``."""


class TokenLogit(NamedTuple):
    """A subject token and its logit through the decoder direction; JSON ``[token, logit]``."""

    token: str
    """The token decoded."""
    logit: float | None
    """Its logit (promoted: positive; suppressed: the negated value, see `OutputSide`)."""


@dataclass(frozen=True)
class OutputSide(Record):
    """Subject tokens the feature's decoder direction promotes and suppresses."""

    promoted: tuple[TokenLogit, ...] = ()
    """Top tokens by logit, largest first."""
    suppressed: tuple[TokenLogit, ...] = ()
    """Bottom tokens by logit, most negative first."""


@dataclass(frozen=True)
class FeatureExtra(Record):
    """What a result carries beyond its label (`LabelResult.extra`); every field optional
    (None: not recorded). See the module docstring for the JSON layout."""

    message: str | None = None
    """Why the feature got no label (results with a status other than ``ok``)."""
    activation: ActivationStats | None = None
    """How the feature fires on the corpus."""
    example_counts: dict[str, int] | None = None
    """Rated examples by kind (``top``, ``quantile``, ``contrast``, ``near_miss``,
    ``random``)."""
    dropped: dict[str, int] | None = None
    """Picks left out of the examples, by reason."""
    words: tuple[WordRecord, ...] | None = None
    """Every word shown to the evaluator, with the subject tokens it maps."""
    merged_words: int | None = None
    """How many of `words` merged several subject tokens."""
    examples: tuple[ExampleRecord, ...] | None = None
    """The rated examples (kept with ``ExampleConfig(keep_examples=True)``)."""
    output_side: OutputSide | None = None
    """The decoder direction's promoted and suppressed subject tokens."""
    coherence_config: dict[str, Any] | None = None
    """The settings reflective coherence (``metrics["coherence_*"]``) was measured with."""
    other: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, or could not read, kept as read (written back)."""

    def to_dict(self) -> dict[str, Any]:
        """The plain dict layout (module docstring): fields that are None left out, `other`
        last."""
        out = {k: v for k, v in super().to_dict().items() if k != "other" and v is not None}
        out.update(self.other)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureExtra:
        """Read `to_dict`'s layout, as any version wrote it: unknown keys, and known ones
        whose value has another shape, go to `other` unchanged."""
        if not isinstance(d, dict):
            raise RecordError(f"LabelResult.extra: expected a mapping, got {type(d).__name__}")
        hints = field_types(cls)
        known: dict[str, Any] = {}
        other: dict[str, Any] = {}
        for k, v in d.items():
            if k == "other" or k not in hints:
                other[k] = v
                continue
            try:
                known[k] = from_plain(hints[k], v, f"extra[{k!r}]")
            except (RecordError, TypeError, ValueError):
                other[k] = v
        return cls(**known, other=other)

    def merged(self, more: FeatureExtra) -> FeatureExtra:
        """This with the fields `more` records (not None) taken from `more`; `other` merged
        the same way."""
        changes = {f.name: getattr(more, f.name) for f in dataclasses.fields(more)
                   if f.name != "other" and getattr(more, f.name) is not None}
        return dataclasses.replace(self, **changes, other={**self.other, **more.other})

    def __bool__(self) -> bool:
        """False when nothing is recorded (like the empty dict of older versions)."""
        return bool(self.to_dict())


def token_logits(pairs: Iterable[tuple[str, float]]) -> tuple[TokenLogit, ...]:
    """``[(token, logit), ...]`` as `TokenLogit`s."""
    return tuple(TokenLogit(str(t), v) for t, v in pairs)
