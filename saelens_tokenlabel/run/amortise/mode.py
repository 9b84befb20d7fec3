"""The amortised run mode (``label_sae_features(..., amortize=AmortizeConfig())``, CLI
``tokenlabel label --amortize``): most features of a large SAE labeled without a descent.

1. A seed set (`AmortizeConfig.n_seed` features: random, or the first in the run's order) is
   labeled by descent.
2. The map (`amortize.Amortizer`) is fitted on the trustworthy labels so far: descents (cold
   or warm-started) that converged and clear the bar on their selection split. It is saved in
   ``run_dir/amortizer``.
3. The rest goes in rounds of `chunk` features: each gets a proposal, scored on its own
   examples (`sae.proposals.verify_group`); accepted ones are stored as they are
   (``method="amortised"``), the others are descended, warm-started from their proposals.
4. The map is refit whenever `refit_every` new descents have finished.

Everything goes into the run's record as soon as it is known, so a stopped run resumes like
any run: finished features are skipped, the seed set is the same (it depends on the features
and the seed only), and the map is refit from the stored labels.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...descent.batch import LabelBatch
from ...records.names import AMORTIZER_DIR
from ...records.result import LabelResult
from ...records.verdict import passes
from ...sae.batches import BatchStage, prepared_batches
from ..record import RunRecord, RunSink
from .config import AmortizeConfig
from .map import Amortizer
from .proposals import feature_inputs, verify_group

if TYPE_CHECKING:
    from sae_lens import SAE

log = logging.getLogger(__name__)

Execute = Callable[[Iterable[LabelBatch]], None]
"""Labels batches by descent through the run's executor, every result into the record."""


def seed_set(features: list[int], config: AmortizeConfig) -> list[int]:
    """The features labeled by descent first: `n_seed` of `features` (in run order), at
    random (seeded) or the first ones."""
    n = config.n_seed(len(features))
    if config.seed_order == "order":
        return features[:n]
    picked = set(random.Random(config.seed).sample(features, n))
    return [f for f in features if f in picked]


def trusted(results: Iterable[LabelResult], bar: float) -> list[LabelResult]:
    """Labels the map may learn from: found by a descent that succeeded by the descent's own
    test (`records.verdict.passes`: converged, clearing `bar` on the selection split, no
    fixable training errors). Accepted proposals are left out: they teach the map nothing it
    did not know."""
    return [r for r in results if r.status == "ok" and r.method != "amortised"
            and passes(r, bar)]


@dataclass
class AmortisedRun:
    """One amortised run's state (module docstring)."""

    sae: SAE[Any]
    """The SAE (its decoder rows are the map's inputs)."""
    stage: BatchStage
    """Prepares features' examples (shared with descents)."""
    record: RunRecord
    """Where results go."""
    sink: RunSink
    """Scores results and keeps them in `record`."""
    execute: Execute
    """Descends batches."""
    config: AmortizeConfig
    """The amortised mode's settings."""
    group_size: int
    """Features per descent batch and per verification group."""
    run_dir: Path | None = None
    """Where the map is saved (None: not saved)."""
    fits: dict[int, Amortizer | None] = field(default_factory=dict)
    """The maps fitted so far, by the round whose labels they were fitted on."""

    @property
    def bar(self) -> float:
        c = self.config.accept_score
        return self.stage.config.success_score if c is None else c

    def run(self, feats: list[int], todo: list[int]) -> None:
        """Seed descents, then propose-verify-descend rounds over the other features.

        The rounds are cut from all of `feats` (not only those still to do), and round i's
        map is fitted on the labels of the seeds and of rounds before i only, refitting
        where their trustworthy count crosses a multiple of `refit_every`: an interrupted
        run, resumed, or several processes on one run folder (which wait for each other at
        the end of every round), use the maps of one uninterrupted run."""
        seeds = seed_set(feats, self.config)
        pending = set(todo)
        self.execute(prepared_batches(
            self.record.groups([f for f in seeds if f in pending], self.group_size),
            self.stage))
        taken = set(seeds)
        others = [f for f in feats if f not in taken]
        size = self.config.chunk
        rounds = [others[i:i + size] for i in range(0, len(others), size)]
        for i, chunk in enumerate(rounds):
            work = [f for f in chunk if f in pending and f not in self.record.labels]
            if work:
                self._pull()
                self._round(work, self._map(i, seeds, rounds))

    def _pull(self) -> None:
        """Results other processes stored since this one read the store."""
        store, labels = self.record.store, self.record.labels
        if store is None:
            return
        missing = [f for f in store.finished() if f not in labels]
        for r in store.results(missing) if missing else ():
            labels.add(r)

    def _map(self, i: int, seeds: list[int], rounds: list[list[int]]) -> Amortizer | None:
        """Round i's map (`run`'s docstring)."""
        labels = self.record.labels
        counts, before = [], list(seeds)
        for j in range(i + 1):
            counts.append(len(trusted((labels[f] for f in before if f in labels), self.bar)))
            before += rounds[j]
        every, least = self.config.refit_every, self.config.min_train
        fit_at = None
        for j, n in enumerate(counts):
            first = n >= least and (fit_at is None)
            if first or (fit_at is not None and n // every > counts[fit_at] // every):
                fit_at = j
        if fit_at is None:
            return None
        if fit_at not in self.fits:
            train_feats = list(seeds) + [f for r in rounds[:fit_at] for f in r]
            self.fits[fit_at] = self._fit(train_feats)
        return self.fits[fit_at]

    def _fit(self, features: list[int]) -> Amortizer:
        labels = self.record.labels
        train = sorted(trusted((labels[f] for f in features if f in labels), self.bar),
                       key=lambda r: int(r.feature))
        x = feature_inputs(self.sae, [int(r.feature) for r in train], self.config.inputs)
        amortizer = Amortizer.fit(x, train, self.config)
        log.info("amortised labels: map fitted on %d labels (%d classes), %s; cross-validated "
                 "top-1 accuracy %s", len(train), len(amortizer.classes), amortizer.method,
                 amortizer.cv_accuracy)
        if self.run_dir is not None:
            amortizer.save(self.run_dir / AMORTIZER_DIR)
        return amortizer

    def _round(self, work: list[int], amortizer: Amortizer | None) -> None:
        # Verification groups are the run's batches: a group's prefix cache holds its
        # features' examples, as a descent batch's does (the same memory).
        for group in self.record.groups(work, self.group_size):
            if amortizer is None:
                self.execute(prepared_batches([group], self.stage))
                continue
            proposals = {p.feature: p for p in amortizer.propose(
                feature_inputs(self.sae, group, self.config.inputs), group)}
            verified = verify_group(group, self.stage, proposals, self.config, self.bar)
            # Started once: the features sent to descent are started by the executor.
            self.sink.start([int(r.feature) for r in verified.results])
            self.sink.put(verified.results)
            if verified.descend.prepared:
                self.execute([verified.descend])
