"""`AmortizeConfig`: how a run labels most features by proposal instead of descent."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...records.serial import Config

AMORTIZE_METHODS = ("auto", "ridge", "knn")
"""The maps of `AmortizeConfig.method`."""
AMORTIZE_INPUTS = ("decoder", "encoder")
"""What the map may read of a feature (`AmortizeConfig.inputs`)."""


@dataclass
class AmortizeConfig(Config):
    """How a run labels most features by proposal instead of descent (`run.amortized`)."""

    seed_features: int | None = None
    """Features labeled by descent before the first fit; None: `seed_fraction` of the
    features, kept within [`min_seed`, `max_seed`]."""
    seed_fraction: float = 0.05
    """The seed set's share of the features, when `seed_features` is None."""
    min_seed: int = 32
    """At least this many seed features (all of them if there are fewer)."""
    max_seed: int = 500
    """At most this many seed features."""
    seed_order: str = "random"
    """How the seed set is chosen: ``"random"`` (seeded by `seed`) or ``"order"`` (the run's
    labeling order, e.g. attribution order)."""
    method: str = "auto"
    """The map: ``"ridge"``, ``"knn"``, or ``"auto"`` (the better by cross-validation)."""
    inputs: tuple[str, ...] = ("decoder",)
    """What the map reads of a feature: its ``"decoder"`` row, and optionally its
    ``"encoder"`` column (each unit-normalised)."""
    ridge: float = 1.0
    """Ridge penalty (on standardised inputs)."""
    knn: int = 5
    """Neighbours of the ``knn`` map."""
    folds: int = 5
    """Cross-validation folds for ``method="auto"`` and the reported accuracies."""
    min_train: int = 8
    """Fewer trustworthy labels than this: no map, every feature is descended."""
    candidates: int = 3
    """The map's best classes scored on each feature's examples; the best of them by the
    descent's selection score (validation, then training balanced accuracy) is the proposal
    that must clear the bar. More than one lets the examples, not the map, choose between
    near neighbours ("animal" or "mammal")."""
    warm_restarts: bool = False
    """Descents warm-started from rejected proposals run the label config's restarts and
    longer labels too; False: one attempt, from the proposal (what the restarts search for,
    a start near a label, is what the proposal gives)."""
    warm_max_steps: int | None = 250
    """Step cap of a warm-started attempt; None: the label config's `max_attempt_steps`."""
    chunk: int = 64
    """Features proposed and verified per round (the map is refit between rounds)."""
    refit_every: int = 32
    """Refit once this many new descents have finished since the last fit (precisely: when
    the count of trustworthy labels crosses a multiple of it; see `refits`)."""
    refit_growth: float = 0.1
    """On a large SAE, refit only once the trustworthy labels have also grown by about this
    fraction since the last fit (the multiple of `refit_every` that is crossed doubles while
    it stays below this fraction of the last fit's count): O(log n) fits in all, so refitting
    costs O(n), not O(n^2). 0: every `refit_every`. Below ``refit_every / refit_growth``
    labels (320 by default) it changes nothing."""
    max_train: int = 4096
    """The map is fitted on at most this many trustworthy labels: a fixed pseudo-random
    subset (by feature index and `seed`) that keeps one label of every class, so a fit and a
    proposal cost no more on a 131k-feature SAE than on a 10k one."""
    accept_score: float | None = None
    """The bar a proposal's balanced accuracy must clear on the training and the validation
    examples; None: the label config's `success_score` (the descent's bar)."""
    seed: int = 0
    """Seed of the random seed set and of the cross-validation folds."""

    def check(self) -> None:
        self.inputs = tuple(self.inputs)  # JSON gives a list
        self.need(self.seed_features is None or self.seed_features >= 0,
                  f"seed_features must be >= 0, got {self.seed_features}")
        self.need(0.0 <= self.seed_fraction <= 1.0,
                  f"seed_fraction must be in [0, 1], got {self.seed_fraction}")
        self.need(0 <= self.min_seed <= self.max_seed,
                  f"need 0 <= min_seed <= max_seed, got {self.min_seed}, {self.max_seed}")
        self.choice("seed_order", ("random", "order"))
        self.choice("method", AMORTIZE_METHODS)
        self.need(bool(self.inputs) and set(self.inputs) <= set(AMORTIZE_INPUTS),
                  f"inputs must be a non-empty subset of {AMORTIZE_INPUTS}, got {self.inputs}")
        self.need(self.ridge > 0, f"ridge must be > 0, got {self.ridge}")
        self.need(self.knn >= 1 and self.folds >= 2 and self.min_train >= 2,
                  "knn must be >= 1, folds >= 2 and min_train >= 2")
        self.need(self.candidates >= 1, f"candidates must be >= 1, got {self.candidates}")
        self.need(self.warm_max_steps is None or self.warm_max_steps >= 1,
                  f"warm_max_steps must be >= 1 or None, got {self.warm_max_steps}")
        self.need(self.chunk >= 1 and self.refit_every >= 1,
                  "chunk and refit_every must be >= 1")
        self.need(self.refit_growth >= 0, f"refit_growth must be >= 0, got {self.refit_growth}")
        self.need(self.max_train >= self.min_train,
                  f"max_train must be >= min_train ({self.min_train}), got {self.max_train}")
        self.need(self.accept_score is None or 0.0 <= self.accept_score <= 1.0,
                  f"accept_score must be in [0, 1], got {self.accept_score}")

    def warm_overrides(self, label_length: int) -> dict[str, Any]:
        """The `LabelConfig` fields of a warm-started descent."""
        out: dict[str, Any] = {}
        if not self.warm_restarts:
            out.update(restarts=(), max_label_length=label_length)
        if self.warm_max_steps is not None:
            out["max_attempt_steps"] = self.warm_max_steps
        return out

    def refits(self, n: int, last: int | None) -> bool:
        """Whether `n` trustworthy labels call for fitting a map, the current one having been
        decided on `last` of them (None: no map yet, fitted once there are `min_train`)."""
        if last is None:
            return n >= self.min_train
        step = self.refit_every
        while self.refit_growth > 0 and 2 * step <= self.refit_growth * last:
            step *= 2
        return n // step > last // step

    def n_seed(self, n_features: int) -> int:
        """How many of `n_features` features the seed set holds."""
        if self.seed_features is not None:
            return min(n_features, self.seed_features)
        want = math.ceil(self.seed_fraction * n_features)
        return min(n_features, max(self.min_seed, min(self.max_seed, want)))
