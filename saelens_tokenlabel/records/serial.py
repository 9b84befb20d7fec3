"""The one way the package's records and configs turn into JSON and back, and check themselves.

Layer 1 (results and configs): imports nothing from the package.

`Record` is the base of every JSON dataclass: `to_dict` writes every field JSON-ready (nested
records as dicts, tuples as lists, int keys as strings) and `from_dict` reads it back by the
fields' declared types (nested records, tuples of records, ``dict[int, ...]`` keys), ignoring
keys this version does not know. Values are taken as written, never coerced, so that a file
read and written again is the same file.

`Config` is a `Record` that checks itself: ``__post_init__`` calls `check`, whose
`need`/`choice` failures are one-line `ConfigError`s that name the config, the field and what
is allowed. Every config (`LabelConfig`, `CacheConfig`, `ExampleConfig`, `ScoreConfig`, ...)
derives from it.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, TypeVar

from .errors import ConfigError, RecordError

R = TypeVar("R", bound="Record")


# ---------------------------------------------------------------------- the mechanism
def to_plain(value: Any) -> Any:
    """`value` JSON-ready: anything with ``to_dict`` as its dict, tuples (named ones too) as
    lists, int dict keys as strings (JSON's only key type), paths as strings."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) else k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of `cls` (a dataclass or named tuple; cached). A field
    whose annotation names a type imported only for type checking reads as `Any` (its value
    is kept as JSON gave it)."""
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls)
        except NameError:
            _HINTS[cls] = _each_field_type(cls)
    return _HINTS[cls]


def _each_field_type(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        names = vars(sys.modules[klass.__module__])
        for name, note in vars(klass).get("__annotations__", {}).items():
            try:
                out[name] = eval(note, names) if isinstance(note, str) else note
            except NameError:
                out[name] = Any
    return out


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
    return any(f.name == name and f.init for f in dataclasses.fields(cls))


_NESTED: dict[type, list[tuple[dataclasses.Field[Any], type[Config]]]] = {}


class _ConfigType(type):
    """Catches a keyword a config no longer takes because its field moved (its class's
    `MOVED_FIELDS` table), and says where it went, before the dataclass's own ``__init__``
    would answer with a bare "unexpected keyword argument"."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        table: dict[str, str] = getattr(cls, "MOVED_FIELDS", {})
        moved = [k for k in kwargs if k in table]
        if moved:
            raise TypeError("; ".join(
                f"{cls.__name__}({k}=...) has moved: write {cls.__name__}({table[k]})"
                for k in moved) + ".")
        return super().__call__(*args, **kwargs)


class Config(Record, metaclass=_ConfigType):
    """Base of the package's config dataclasses (see the module docstring): a `Record` that
    checks itself on construction. A subclass lists the keywords it no longer takes, and where
    each went, in `MOVED_FIELDS` (old keyword -> the new spelling); using one is a one-line
    TypeError that says so."""

    MOVED_FIELDS: typing.ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        self._restore_nested()
        self.check()

    def check(self) -> None:
        """Raise `ConfigError` for a value that cannot work. Subclasses override."""

    def need(self, cond: bool, msg: str) -> None:
        """`ConfigError` "<Config>: <msg>" unless `cond`."""
        if not cond:
            raise ConfigError(f"{type(self).__name__}: {msg}")

    def choice(self, name: str, choices: Iterable[Any]) -> None:
        """Field `name` must be one of `choices`; the error lists them."""
        choices = tuple(choices)
        value = getattr(self, name)
        self.need(value in choices, f"{name} must be one of "
                  f"{', '.join(repr(c) for c in choices)}; got {value!r}")

    def _restore_nested(self) -> None:
        # A nested config given (or loaded) as a dict becomes its config again.
        for f, typ in _NESTED.setdefault(type(self), _nested_fields(type(self))):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                object.__setattr__(self, f.name, typ.from_dict(value))



def _nested_fields(cls: type) -> list[tuple[dataclasses.Field[Any], type[Config]]]:
    # A nested config field is one whose declared type (or its ``| None``) is a Config class;
    # a type that only type checkers see reads as Any (`field_types`) and is not nested.
    hints = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name, Any)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = options[0] if len(options) == 1 else Any
        if isinstance(tp, type) and issubclass(tp, Config):
            out.append((f, tp))
    return out
