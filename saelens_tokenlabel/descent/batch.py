"""The seam between preparing features and labeling them: `LabelBatch`, `label_batch` and
`ResultSink`.

Layer 3 (above the labeler, below `sae/` and `run/`). The SAE stages (`sae/batches.py`) turn
selected examples into `LabelBatch` records; an executor (`run/executors.py`, or Ray in
`run/ray_backend.py`) labels them with `label_batch`, wherever the evaluator lives, and hands
each batch's results, completed on the driver by `LabelBatch.finish`, to a `ResultSink`. An
executor knows nothing else of SAEs, so a test can drive one with hand-made batches or pass
its own `label` function to inject a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from ..evaluator.model import Evaluator
from ..records.config import LabelConfig
from ..records.data import FeatureData
from ..records.result import LabelResult
from .labeler import label_features_data

Finish = Callable[[list[LabelResult]], list[LabelResult]]


def _unchanged(results: list[LabelResult]) -> list[LabelResult]:
    return results


@dataclass(frozen=True)
class LabelBatch:
    """Features that share one optimisation, as prepared on the driver."""

    features: list[int]
    """Every feature of the batch, in labeling order (those in `done` too)."""
    done: list[LabelResult] = field(default_factory=list)
    """Results that need no labeling (dead, non-finite or unlabelable features)."""
    datas: list[FeatureData] = field(default_factory=list)
    """What to label: one `FeatureData` per remaining feature (its name is the feature)."""
    init_logits: Sequence[torch.Tensor | None] | None = None
    """Per-feature warm-start logits over the evaluator's vocabulary (one per `datas` entry,
    on the CPU, so that they travel with the batch), or None for a cold start."""
    finish: Finish = _unchanged
    """Driver side, after labeling: returns the results with what the driver knows added
    (examples, words, activation statistics), as new records. Never sent to a worker."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`LabelConfig` fields these features are labeled with instead of the run's (e.g. the
    budget of descents warm-started from amortised proposals); recorded in each result's
    `config`."""

    @property
    def to_label(self) -> list[int]:
        """The features `label_batch` labels (those with data)."""
        return [int(d.name) for d in self.datas]

    def for_worker(self) -> LabelBatch:
        """This batch without its driver-side parts: what a remote worker needs."""
        return replace(self, done=[], finish=_unchanged)


LabelFn = Callable[[LabelBatch, Evaluator, LabelConfig], list[LabelResult]]
"""How a batch is labeled: `label_batch`, or a test's stand-in."""


def label_batch(batch: LabelBatch, evaluator: Evaluator, config: LabelConfig
                ) -> list[LabelResult]:
    """Label `batch.datas` in one optimisation (the core `label_features_data`). Runs where
    the evaluator is: in this process, or in a Ray actor."""
    if batch.overrides:
        config = replace(config, **batch.overrides)
    return label_features_data(batch.datas, evaluator, config,
                               init_logits=batch.init_logits)


class ResultSink(Protocol):
    """Where an executor reports: a batch started, results finished, or a batch failed."""

    def start(self, features: list[int]) -> None:
        """`features` are being labeled now."""

    def put(self, results: list[LabelResult]) -> None:
        """Finished results (already completed by `LabelBatch.finish`)."""

    def fail(self, features: list[int], err: BaseException) -> None:
        """Labeling `features` raised `err` (the executor re-raises it afterwards)."""
