"""Typed records of what a result carries beyond its label (`LabelResult.extra`), and the one
way records turn into JSON and back.

Layer 1 (results and configs): imports nothing from the package.

`Record` is the base: `to_dict` writes every field JSON-ready (nested records as dicts, tuples
as lists, int keys as strings) and `from_dict` reads it back by the fields' declared types
(nested records, tuples of records, ``dict[int, ...]`` keys), ignoring keys this version does
not know. Values are taken as written, never coerced, so that a file read and written again is
the same file.

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
import functools
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A JSON value that does not have the shape its record field declares."""


# ---------------------------------------------------------------------- the mechanism
def to_plain(value: Any) -> Any:
    """`value` JSON-ready: anything with ``to_dict`` as its dict, tuples (named ones too) as
    lists, int dict keys as strings (JSON's only key type)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) else k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of `cls` (a dataclass or named tuple; cached)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def from_plain(tp: Any, value: Any, where: str = "value") -> Any:
    """`value` (as JSON gave it) as type `tp`: records and named tuples built from their dicts
    and lists, containers element by element, ``dict[int, ...]`` keys back to ints. Plain
    values are kept as they are. `RecordError` (naming `where`) when the shape is wrong."""
    if value is None:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_plain(options[0], value, where) if len(options) == 1 else value
    if _as_read(tp):
        kind = {list: list, dict: dict}.get(origin)
        if kind is not None and not isinstance(value, kind):
            raise RecordError(f"{where}: expected a {'list' if kind is list else 'mapping'}, "
                              f"got {type(value).__name__}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [from_plain(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {(int(k) if key_tp is int else k): from_plain(val_tp, v, f"{where}[{k!r}]")
                for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):
        if not isinstance(value, list | tuple) or len(value) != len(tp._fields):
            raise RecordError(f"{where}: expected [{', '.join(tp._fields)}], got {value!r}")
        hints = field_types(tp)
        return tp(*(from_plain(hints[n], v, f"{where}.{n}")
                    for n, v in zip(tp._fields, value, strict=True)))
    if isinstance(tp, type) and hasattr(tp, "from_dict"):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected a {tp.__name__} mapping, got "
                              f"{type(value).__name__}")
        try:
            return tp.from_dict(value)
        except TypeError as err:  # a required field missing
            raise RecordError(f"{where}: not a {tp.__name__} ({err})") from None
    return value


@functools.cache
def _as_read(tp: Any) -> bool:
    """Whether JSON's value already is a `tp` (no record, named tuple, tuple or int key
    inside): then `from_plain` keeps it without walking it (a trajectory's many numbers)."""
    if tp is Any or tp in (str, int, float, bool, type(None)):
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType or origin in (list, dict):
        args = typing.get_args(tp)
        if origin is dict and args and args[0] is not str:
            return False
        return all(_as_read(a) for a in args if a is not Ellipsis)
    return False


class Record:
    """Base of the result records (dataclasses): JSON round trips by field type."""

    LATER_FIELDS: typing.ClassVar[frozenset[str]] = frozenset()
    """Fields added after the format was first written: left out of `to_dict` while they
    hold their default, so that a file of an earlier version is written back unchanged."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, in declaration order (`LATER_FIELDS` at their default
        left out)."""
        return {f.name: to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if not (f.name in self.LATER_FIELDS and _at_default(self, f))}

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """The record of `to_dict`'s output; keys this version does not know are ignored."""
        hints = field_types(cls)
        return cls(**{k: from_plain(hints[k], v, f"{cls.__name__}.{k}")
                      for k, v in d.items() if k in hints and _is_init(cls, k)})


def _at_default(record: Any, f: dataclasses.Field) -> bool:
    value = getattr(record, f.name)
    if f.default is not dataclasses.MISSING:
        return value == f.default
    if f.default_factory is not dataclasses.MISSING:
        return value == f.default_factory()
    return False


def _is_init(cls: type, name: str) -> bool:
    return any(f.name == name and f.init for f in dataclasses.fields(cls))  # type: ignore


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
