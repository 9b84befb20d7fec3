"""Executors: who labels the prepared batches. They see only the seam (`batch.py`):
`LabelBatch` records in, `label_batch` (or a stand-in) to label them, a `ResultSink` out.
They never import `sae/`.

`LocalExecutor` labels in this process; `ray_backend.RayExecutor` on Ray actors. A test
injects a failure, or records what is labeled, by passing its own ``label`` function (or
its own executor) to `label_sae_features(..., executor=...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..descent.batch import LabelBatch, LabelFn, ResultSink, label_batch
from ..evaluator.model import Evaluator
from ..records.config import LabelConfig


class Executor(Protocol):
    """Labels batches and reports every batch to `sink` as it goes (`ResultSink`)."""

    def run(self, batches: Iterable[LabelBatch], evaluator: Evaluator, config: LabelConfig,
            sink: ResultSink) -> None:
        """Label every batch; on a failure, report it to the sink and raise it."""


class LocalExecutor:
    """Label the batches one after another in this process."""

    def __init__(self, label: LabelFn = label_batch) -> None:
        self.label = label

    def run(self, batches: Iterable[LabelBatch], evaluator: Evaluator, config: LabelConfig,
            sink: ResultSink) -> None:
        for batch in batches:
            sink.start(batch.features)
            sink.put(batch.done)
            if not batch.prepared:
                continue
            try:
                results = self.label(batch, evaluator, config)
            except Exception as err:
                sink.fail(batch.to_label, err)
                raise
            sink.put(batch.finish(results))
