"""Which scorers a run uses (`ScoreConfig`), and running them over finished results
(`add_sae_scores`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...records.columns import scorer_entry
from ...records.result import LabelResult
from ...records.serial import Config
from ..subject import Subject, require_subject
from .registry import DEFAULT_SCORERS, ScoreItem, ScorerError, get_scorer, known_scorers


@dataclass
class ScoreConfig(Config):
    """Which SAE-side scorers run on every finished label, and their settings."""

    scorers: tuple[str, ...] = DEFAULT_SCORERS
    """Registered scorer names (`sae.scorers.known_scorers`), run in this order: by default
    the output side, reflective coherence and the steering score."""
    options: dict[str, Any] = field(default_factory=dict)
    """Scorer name -> its settings: a config of the scorer's `config_type`, or a dict of its
    fields. A scorer not named here runs with its defaults."""

    MOVED_FIELDS: ClassVar[dict[str, str]] = {
        **{f"{name}": f"scorers=(...) without {name!r}, to leave it out" for name in
           ("output_side", "coherence", "steering")},
        "output_k": "options={'output_side': {'k': ...}}",
        "coherence_config": "options={'coherence': CoherenceConfig(...)}",
        "steering_config": "options={'steering': SteeringConfig(...)}",
    }
    """The switches and sub-configs each scorer had here before scorers were registered."""

    def check(self) -> None:
        self.scorers = tuple(self.scorers)
        known = known_scorers()
        unknown = [n for n in (*self.scorers, *self.options) if n not in known]
        self.need(not unknown, f"no scorer named {', '.join(map(repr, unknown))}; known: "
                  f"{', '.join(known)} (register yours with sae.scorers.register_scorer)")
        self.need(len(set(self.scorers)) == len(self.scorers),
                  f"scorers names one twice: {list(self.scorers)}")
        self.options = {name: self.config_for(name).to_dict() for name in self.options}

    def config_for(self, name: str) -> Config:
        """The settings scorer `name` runs with (its `config_type`)."""
        kind = get_scorer(name).config_type
        given = self.options.get(name)
        if given is None:
            return kind()
        if isinstance(given, kind):
            return given
        if isinstance(given, Config):
            raise ScorerError(f"ScoreConfig.options[{name!r}] is a {type(given).__name__}; "
                              f"scorer {name!r} takes a {kind.__name__}.")
        return kind.from_dict(dict(given))

    def entries(self) -> list[dict[str, Any]]:
        """The scorers as a run's info records them (`records.columns`)."""
        return [scorer_entry(n, tuple(get_scorer(n).columns)) for n in self.scorers]


def _scorable(result: LabelResult) -> int:
    f = result.feature
    if isinstance(f, bool) or not str(f).lstrip("-").isdigit():
        raise ValueError(f"SAE scores need results whose feature is an SAE feature index; got "
                         f"feature={f!r}.")
    return int(f)


def add_sae_scores(results: Sequence[LabelResult], subject: Subject,
                   config: ScoreConfig | None = None) -> list[LabelResult]:
    """`results` with every scorer of `config` applied in turn, as new results (the given
    ones are left as they were: use the return value). A scorer marked `labeled_only` sees
    the results with a label only."""
    subject = require_subject(subject, "add_sae_scores")
    config = config or ScoreConfig()
    out = list(results)
    feats = [_scorable(r) for r in out]
    for name in config.scorers:
        scorer = get_scorer(name)
        idx = [i for i, r in enumerate(out)
               if not scorer.labeled_only or (r.status == "ok" and r.label.strip())]
        if not idx:
            continue
        updates = scorer.score(subject, [ScoreItem(feats[i], out[i]) for i in idx],
                               config.config_for(name))
        if len(updates) != len(idx):
            raise ScorerError(f"scorer {name!r} returned {len(updates)} updates for "
                              f"{len(idx)} results; it must return one per item.")
        for i, u in zip(idx, updates, strict=True):
            r = out[i]
            extra = r.extra if u.extra is None else r.extra.merged(u.extra)
            out[i] = dataclasses.replace(r, metrics={**r.metrics, **u.metrics}, extra=extra)
    return out
