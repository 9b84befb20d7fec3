"""Config dataclasses: one way to check them and one way to turn them into JSON and back.

Layer 1 (results and configs): imports nothing from the package.

Every config (`LabelConfig`, `CacheConfig`, `ExampleConfig`, `ScoreConfig`, ...) derives from
`Config`: ``__post_init__`` calls `check`, whose `need`/`choice` failures are one-line
``ValueError``s that name the config, the field and what is allowed; `to_dict` and `from_dict`
round-trip it through JSON (tuples as lists, nested configs as dicts, unknown keys of older or
newer files ignored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

from .extra import to_plain

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


class Config:
    """Base of the package's config dataclasses (see the module docstring)."""

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
        for f, typ in _nested_fields(type(self)):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                object.__setattr__(self, f.name, typ.from_dict(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, tuples as lists, nested configs as dicts."""
        return {f.name: to_plain(getattr(self, f.name))
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """The config of `to_dict`'s output; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})


def _nested_fields(cls: type) -> list[tuple[dataclasses.Field[Any], type[Config]]]:
    # A nested config field is one whose default is made by a Config class
    # (``field(default_factory=SubConfig)``): read from the field itself, so that string
    # annotations never need resolving.
    out = []
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        if isinstance(factory, type) and issubclass(factory, Config):
            out.append((f, factory))
    return out
