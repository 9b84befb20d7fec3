"""The seam for SAE-side scorers: the `Scorer` protocol and a registry that refuses duplicates.

A scorer reads finished labels with the subject model and the SAE (the evaluator has already
scored each hard label on held-out examples) and writes metrics into the result, and
optionally what it measured into the result's extra. The package registers three:
``"output_side"``, ``"coherence"`` and ``"steering"``, each from its own module, imported when
first asked for. A user's own scorer is a class with the protocol's attributes, registered
once in their code::

    from saelens_tokenlabel.records.columns import ScoreColumn
    from saelens_tokenlabel.sae.scorers import NoOptions, ScoreUpdate, register_scorer

    class LabelChars:
        name = "label_chars"
        config_type = NoOptions
        columns = (ScoreColumn("label_chars", "label length"),)
        labeled_only = True

        def score(self, subject, items, config):
            return [ScoreUpdate({"label_chars": float(len(i.result.label))}) for i in items]

    register_scorer(LabelChars())

and named where scorers are chosen: ``ScoreConfig(scorers=(..., "label_chars"))``, or
``tokenlabel label --score label_chars --import mymodule``. A package may instead declare an
entry point in the group ``saelens_tokenlabel.scorers`` whose object is the scorer (or a module
that registers it): `get_scorer` loads it when its name is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ...records.columns import ScoreColumn
from ...records.errors import ScorerError
from ...records.extra import FeatureExtra
from ...records.result import LabelResult
from ...records.serial import Config

if TYPE_CHECKING:
    from ..subject import Subject

ENTRY_POINT_GROUP = "saelens_tokenlabel.scorers"
"""Packages declare their scorers under this entry-point group."""
DEFAULT_SCORERS = ("output_side", "coherence", "steering")
"""The scorers a run uses unless told otherwise (all three the package ships)."""
_BUILTIN = {"output_side": ".output_side", "coherence": ".coherence", "steering": ".steering"}


@dataclass
class NoOptions(Config):
    """The settings of a scorer that has none."""


@dataclass(frozen=True)
class ScoreItem:
    """One finished label to score."""

    feature: int
    """The SAE feature."""
    result: LabelResult
    """Its result so far (label, metrics, the scores of scorers that ran before)."""


@dataclass(frozen=True)
class ScoreUpdate:
    """What a scorer adds to one result."""

    metrics: dict[str, float | None]
    """Metrics merged into `LabelResult.metrics` (their keys: the scorer's `columns`)."""
    extra: FeatureExtra | None = None
    """Fields merged into `LabelResult.extra` (`FeatureExtra.merged`), or None."""


@runtime_checkable
class Scorer(Protocol):
    """An SAE-side scorer (module docstring). Class attributes satisfy its read-only
    members."""

    @property
    def name(self) -> str:
        """Its registry name (what `ScoreConfig.scorers` and ``--score`` name)."""
        ...

    @property
    def config_type(self) -> type[Config]:
        """Its settings' config class; `ScoreConfig.options` gives one (or its fields)."""
        ...

    @property
    def columns(self) -> tuple[ScoreColumn, ...]:
        """The metrics it writes, as the report and exports show them."""
        ...

    @property
    def labeled_only(self) -> bool:
        """Score only results with a label (status ``ok``); False: every result (dead ones
        too)."""
        ...

    def score(self, subject: Subject, items: Sequence[ScoreItem], config: Config
              ) -> list[ScoreUpdate]:
        """One update per item, in order (all items at once: batch what can be batched)."""
        ...


_SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer) -> Scorer:
    """Make `scorer` available under its name; a name already taken is a `ScorerError`.
    Returns the scorer (usable as a class decorator's body: ``register_scorer(Mine())``)."""
    if not isinstance(scorer, Scorer):
        raise ScorerError(f"{type(scorer).__name__} is not a scorer: it needs name, "
                          "config_type, columns, labeled_only and score(subject, items, config).")
    name = str(scorer.name)
    home = _BUILTIN.get(name)
    if home is not None and name not in _SCORERS and \
            type(scorer).__module__ != __package__ + home:
        _load_builtin(name)
    if name in _SCORERS:
        raise ScorerError(f"a scorer named {name!r} is registered already "
                          f"({type(_SCORERS[name]).__qualname__}); give yours another name.")
    _SCORERS[name] = scorer
    return scorer


def _load_builtin(name: str) -> None:
    importlib.import_module(_BUILTIN[name], __package__)


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_scorer(name: str) -> Scorer:
    """The scorer registered as `name` (a built-in, or an entry point, loaded on first use)."""
    if name not in _SCORERS and name in _BUILTIN:
        _load_builtin(name)
    if name not in _SCORERS:
        ep = _entry_points().get(name)
        if ep is not None:
            loaded = ep.load()  # type: ignore[attr-defined]
            if name not in _SCORERS and isinstance(loaded, Scorer):
                register_scorer(loaded)
    if name not in _SCORERS:
        raise ScorerError(f"no scorer named {name!r}; known: {', '.join(known_scorers())}. "
                          "Register yours with register_scorer (and, on the command line, "
                          "--import the module that does).")
    return _SCORERS[name]


def known_scorers() -> list[str]:
    """Every name `get_scorer` can give: built-in, registered, or declared by entry points."""
    return sorted(set(_BUILTIN) | set(_SCORERS) | set(_entry_points()))
