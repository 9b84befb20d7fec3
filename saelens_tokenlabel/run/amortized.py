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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..amortize import AmortizeConfig, Amortizer
from ..batch import LabelBatch
from ..names import AMORTIZER_DIR
from ..result import LabelResult, selection_score
from ..sae.batches import BatchStage, prepared_batches
from ..sae.proposals import feature_inputs, verify_group
from .record import RunRecord, RunSink

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
    """Labels the map may learn from: found by a descent, converged, and clearing `bar` on
    the split attempts are chosen by. Accepted proposals are left out: they teach the map
    nothing it did not know."""
    return [r for r in results if r.status == "ok" and r.method != "amortised" and r.converged
            and selection_score(r.metrics) >= bar]


@dataclass
class AmortizedRun:
    """One amortised run's state (module docstring)."""

    sae: Any
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
    amortizer: Amortizer | None = None
    fitted_on: int = -1

    @property
    def bar(self) -> float:
        c = self.config.accept_score
        return self.stage.config.success_score if c is None else c

    def run(self, feats: list[int], todo: list[int]) -> None:
        """Seed descents, then propose-verify-descend rounds over the rest of `todo`."""
        seeds = set(seed_set(feats, self.config))
        self.execute(prepared_batches(
            self.record.groups([f for f in todo if f in seeds], self.group_size), self.stage))
        rest = [f for f in todo if f not in seeds and f not in self.record.labels]
        for start in range(0, len(rest), self.config.chunk):
            self._round([f for f in rest[start:start + self.config.chunk]
                         if f not in self.record.labels])

    def _round(self, chunk: list[int]) -> None:
        amortizer = self._refit()
        for group in self.record.groups(chunk, self.group_size):
            if amortizer is None:
                self.execute(prepared_batches([group], self.stage))
                continue
            proposals = {p.feature: p for p in amortizer.propose(
                feature_inputs(self.sae, group, self.config.inputs), group)}
            self.sink.start(group)
            verified = verify_group(group, self.stage, proposals, self.config, self.bar)
            self.sink.put(verified.results)
            if verified.descend.datas:
                self.execute([verified.descend])

    def _refit(self) -> Amortizer | None:
        labels = self.record.labels
        train = sorted(trusted((labels[f] for f in labels), self.bar),
                       key=lambda r: int(r.feature))
        due = self.amortizer is None or len(train) - self.fitted_on >= self.config.refit_every
        if len(train) < self.config.min_train or not due:
            return self.amortizer
        x = feature_inputs(self.sae, [int(r.feature) for r in train], self.config.inputs)
        self.amortizer = Amortizer.fit(x, train, self.config)
        self.fitted_on = len(train)
        log.info("amortised labels: map fitted on %d labels (%d classes), %s; cross-validated "
                 "top-1 accuracy %s", len(train), len(self.amortizer.classes),
                 self.amortizer.method, self.amortizer.cv_accuracy)
        if self.run_dir is not None:
            self.amortizer.save(self.run_dir / AMORTIZER_DIR)
        return self.amortizer
