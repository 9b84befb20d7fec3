"""The seam between preparing features and labeling them: `LabelBatch`, `label_batch` and
`ResultSink`.

Part of the descent (layer 4: above the labeler, below `sae/` and `run/`). The SAE stages
(`sae/batches.py`) turn selected examples into `LabelBatch` records; an executor
(`run/executors.py`, or Ray in `run/ray_backend.py`) labels them with `label_batch`, wherever
the evaluator lives, and hands each batch's results, completed on the driver by
`LabelBatch.finish`, to a `ResultSink`. An executor knows nothing else of SAEs, so a test can
drive one with hand-made batches or pass its own `label` function to inject a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from ..evaluator.model import Evaluator
from ..records.config import LabelConfig
from ..records.data import PreparedFeature
from ..records.extra import FeatureExtra
from ..records.result import Attempt, LabelResult
from .labeler import label_prepared


@dataclass(frozen=True)
class LabelBatch:
    """Features that share one optimisation, as prepared on the driver."""

    features: list[int]
    """Every feature of the batch, in labeling order (those in `done` too)."""
    done: list[LabelResult] = field(default_factory=list)
    """Results that need no labeling (dead, non-finite or unlabelable features)."""
    prepared: list[PreparedFeature] = field(default_factory=list)
    """What to label: each remaining feature's checked examples (its name is the feature),
    prepared once on the driver and carried to wherever the evaluator is."""
    init_logits: Sequence[torch.Tensor | None] | None = None
    """Per-feature warm-start logits over the evaluator's vocabulary (one per `prepared`
    entry, on the CPU, so that they travel with the batch), or None for a cold start."""
    extras: dict[int, FeatureExtra] = field(default_factory=dict)
    """Driver side: what the SAE side knows of each feature (its examples, words, activation
    statistics), attached to its result by `finish`. Never sent to a worker."""
    before: dict[int, list[Attempt]] = field(default_factory=dict)
    """Driver side: attempts listed before a feature's own (e.g. rejected amortised
    proposals). Never sent to a worker."""
    method: str | None = None
    """`LabelResult.method` of these results (None: as labeled, ``"descended"``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`LabelConfig` fields these features are labeled with instead of the run's (e.g. the
    budget of descents warm-started from amortised proposals); recorded in each result's
    `config`."""

    @property
    def to_label(self) -> list[int]:
        """The features `label_batch` labels (those prepared)."""
        return [int(p.name) for p in self.prepared]

    def for_worker(self) -> LabelBatch:
        """This batch without its driver-side parts: what a remote worker needs."""
        return replace(self, done=[], extras={}, before={})

    def finish(self, results: list[LabelResult]) -> list[LabelResult]:
        """Driver side, after labeling: each result with its feature's extra, earlier
        attempts and method, as new records."""
        out = []
        for r in results:
            f = int(r.feature)
            out.append(replace(r, extra=self.extras.get(f, r.extra),
                               attempts=[*self.before.get(f, []), *r.attempts],
                               method=self.method or r.method))
        return out


LabelFn = Callable[[LabelBatch, Evaluator, LabelConfig], list[LabelResult]]
"""How a batch is labeled: `label_batch`, or a test's stand-in."""


def label_batch(batch: LabelBatch, evaluator: Evaluator, config: LabelConfig
                ) -> list[LabelResult]:
    """Label `batch.prepared` in one optimisation (the core `label_prepared`). Runs where
    the evaluator is: in this process, or in a Ray actor."""
    if batch.overrides:
        config = replace(config, **batch.overrides)
    return label_prepared(batch.prepared, evaluator, config, init_logits=batch.init_logits)


class ResultSink(Protocol):
    """Where an executor reports: a batch started, results finished, or a batch failed."""

    def start(self, features: list[int]) -> None:
        """`features` are being labeled now."""

    def put(self, results: list[LabelResult]) -> None:
        """Finished results (already completed by `LabelBatch.finish`)."""

    def fail(self, features: list[int], err: BaseException) -> None:
        """Labeling `features` raised `err` (the executor re-raises it afterwards)."""
