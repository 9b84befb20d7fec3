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
4. The map is refit whenever `refit_every` new descents have finished (on a large SAE, once
   they have grown by `refit_growth` too: O(log n) fits in all), on at most `max_train` of
   them.

Everything goes into the run's record as soon as it is known, so a stopped run resumes like
any run: finished features are skipped, the seed set is the same (it depends on the features
and the seed only), and the map is refit from the stored labels.

Descents and verifications go to the run's `Pool` (`executors.open_pool`): in this process
they are done at once; on Ray they run on the actors while the driver goes on. The driver
starts round i as soon as round i's map is known, before the descents of earlier rounds have
all come back: it is known when no label still out could change it (`Rounds.bounds`: even if
every feature still out became a trustworthy label, no refit would be due), and otherwise the
driver waits for them. So a run on Ray keeps its actors busy across rounds and still uses,
round by round, the maps of the same run in one process: the same labels.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...descent.batch import LabelBatch
from ...descent.verify import Checked
from ...records.names import AMORTIZER_DIR
from ...records.result import LabelResult
from ...records.verdict import passes
from ...sae.batches import BatchStage, prepare_batch, prepared_batches
from ..executors import Pool
from ..record import RunRecord, RunSink
from .config import AmortizeConfig
from .map import Amortizer, training_subset
from .proposals import feature_inputs, finish_verification, prepare_verification

if TYPE_CHECKING:
    from sae_lens import SAE

log = logging.getLogger(__name__)


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


class Rounds:
    """The run's groups in order (the seed set, then each round) and what is known of them:
    each group's trustworthy labels so far and its features not finished yet. Groups are
    looked at from the first unfinished one on, each finished feature once: O(features) over
    the whole run."""

    def __init__(self, groups: list[list[int]], bar: float) -> None:
        self.groups, self.bar = groups, bar
        self.trusted: list[list[int]] = [[] for _ in groups]
        self.missing: list[set[int]] = [set(g) for g in groups]
        self.done = 0
        """Groups before this one have every feature finished."""
        self._done_count = 0
        """Trustworthy labels in the groups before `done`."""

    def refresh(self, upto: int, labels: Mapping[int, LabelResult]) -> None:
        """Take in the finished features of groups up to `upto` (`labels`)."""
        for g in range(self.done, min(upto, len(self.groups) - 1) + 1):
            missing = self.missing[g]
            for f in [f for f in missing if f in labels]:
                missing.discard(f)
                if trusted([labels[f]], self.bar):
                    self.trusted[g].append(f)
        while self.done < len(self.groups) and not self.missing[self.done]:
            self._done_count += len(self.trusted[self.done])
            self.done += 1

    def bounds(self, upto: int) -> tuple[int, int]:
        """The trustworthy labels of groups 0..`upto`: known now, and at most (every feature
        still out a trustworthy label)."""
        lo = self._done_count
        hi = lo
        for g in range(self.done, upto + 1):
            lo += len(self.trusted[g])
            hi += len(self.trusted[g]) + len(self.missing[g])
        return lo, hi

    def out(self, upto: int) -> set[int]:
        """The features of groups 0..`upto` not finished yet."""
        return set().union(*self.missing[self.done:upto + 1])

    def training(self, upto: int) -> list[int]:
        """The trustworthy labels' features of groups 0..`upto`."""
        return [f for g in range(upto + 1) for f in self.trusted[g]]


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
    pool: Pool
    """Descends batches and verifies proposals (in this process, or on Ray actors)."""
    config: AmortizeConfig
    """The amortised mode's settings."""
    group_size: int
    """Features per descent batch and per verification group."""
    run_dir: Path | None = None
    """Where the map is saved (None: not saved)."""
    map: Amortizer | None = None
    """The map of the round being proposed (None: none yet)."""
    fitted: list[int] = field(default_factory=list)
    """The rounds whose maps were fitted, in order (a map of round j is fitted on the seeds'
    and rounds 0..j-1's labels)."""
    _rounds: Rounds | None = field(default=None, repr=False)
    _decided: int = field(default=-1, repr=False)
    """Rounds up to this one have their map decided."""
    _fit_n: int | None = field(default=None, repr=False)
    """Trustworthy labels the current map's decision counted (None: no map)."""
    _mine: set[int] = field(default_factory=set, repr=False)
    """Features this process sent to the pool (the others are other processes')."""

    @property
    def bar(self) -> float:
        c = self.config.accept_score
        return self.stage.config.success_score if c is None else c

    def run(self, feats: list[int], todo: list[int]) -> None:
        """Seed descents, then propose-verify-descend rounds over the other features.

        The rounds are cut from all of `feats` (not only those still to do), and round i's
        map is fitted on the labels of the seeds and of rounds before i only, refitting
        where their trustworthy count calls for it (`AmortizeConfig.refits`): an interrupted
        run, resumed, or several processes on one run folder (which wait for each other at
        the end of every round), use the maps of one uninterrupted run."""
        seeds = seed_set(feats, self.config)
        pending = set(todo)
        for batch in prepared_batches(
                self.record.groups([f for f in seeds if f in pending], self.group_size),
                self.stage):
            self._mine.update(batch.features)
            self.pool.descend(batch)
        taken = set(seeds)
        others = [f for f in feats if f not in taken]
        size = self.config.chunk
        rounds = [others[i:i + size] for i in range(0, len(others), size)]
        self._rounds = Rounds([seeds, *rounds], self.bar)
        for i, chunk in enumerate(rounds):
            work = [f for f in chunk if f in pending and f not in self.record.labels]
            if work:
                self._round(work, self._map(i))
        self.pool.drain()

    def _map(self, i: int) -> Amortizer | None:
        """Round i's map, once the labels it depends on are in (module docstring)."""
        while True:
            self._pull(i)
            if self._decide(i, exact=False):
                return self.map
            if not self.pool.wait():  # nothing out here: what is missing stays missing
                self._decide(i, exact=True)
                return self.map

    def _pull(self, i: int) -> None:
        """Results other processes stored since this one read the store, of the features
        round i's map counts."""
        store, labels = self.record.store, self.record.labels
        assert self._rounds is not None
        theirs = sorted(self._rounds.out(i) - self._mine) if store is not None else []
        for r in store.results(theirs) if store is not None and theirs else ():
            labels.add(r)

    def _decide(self, i: int, exact: bool) -> bool:
        """Decide the maps of rounds up to i, fitting where one is due; False when a label
        still out could change a decision. `exact`: count only what is in (nothing more
        will come)."""
        rounds = self._rounds
        assert rounds is not None
        rounds.refresh(i, self.record.labels)
        for j in range(self._decided + 1, i + 1):
            lo, hi = rounds.bounds(j)
            if exact:
                hi = lo
            if self.config.refits(lo, self._fit_n):
                if lo != hi:
                    return False  # due for sure, but on labels not all in yet
                self._fit_n = lo
                self.map = self._fit(rounds.training(j))
                self.fitted.append(j)
            elif self.config.refits(hi, self._fit_n):
                return False
            self._decided = j
        return True

    def _fit(self, features: list[int]) -> Amortizer:
        labels = self.record.labels
        train = training_subset(sorted((labels[f] for f in features), key=lambda r: int(
            r.feature)), self.config.max_train, self.config.seed)
        x = feature_inputs(self.sae, [int(r.feature) for r in train], self.config.inputs)
        amortizer = Amortizer.fit(x, train, self.config)
        log.info("amortised labels: map fitted on %d of %d labels (%d classes), %s; "
                 "cross-validated top-1 accuracy %s", len(train), len(features),
                 len(amortizer.classes), amortizer.method, amortizer.cv_accuracy)
        if self.run_dir is not None:
            amortizer.save(self.run_dir / AMORTIZER_DIR)
        return amortizer

    def _round(self, work: list[int], amortizer: Amortizer | None) -> None:
        # Verification groups are the run's batches: a group's prefix cache holds its
        # features' examples, as a descent batch's does (the same memory).
        for group in self.record.groups(work, self.group_size):
            self._mine.update(group)
            if amortizer is None:
                self.pool.descend(prepare_batch(group, self.stage))
                continue
            proposals = {p.feature: p for p in amortizer.propose(
                feature_inputs(self.sae, group, self.config.inputs), group)}
            base, check = prepare_verification(group, self.stage, proposals, self.config,
                                               self.bar)
            then = functools.partial(self._verified, base)
            if check.prepared:
                self.pool.verify(check, then)
            else:
                then(Checked())

    def _verified(self, base: LabelBatch, checked: Checked) -> None:
        """A group's verification is back: keep the accepted results, descend the rest."""
        verified = finish_verification(base, checked, self.stage, self.config, self.bar)
        # Started once: the features sent to descent are started by the pool.
        self.sink.start([int(r.feature) for r in verified.results])
        self.sink.put(verified.results)
        if verified.descend.prepared:
            self.pool.descend(verified.descend)
