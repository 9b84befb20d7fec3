"""Executors: who labels the prepared batches. They see only the seam (`batch.py`):
`LabelBatch` records in, `label_batch` (or a stand-in) to label them, a `ResultSink` out.
They never import `sae/`.

`LocalExecutor` labels in this process; `ray_backend.RayExecutor` on Ray actors. A test
injects a failure, or records what is labeled, by passing its own ``label`` function (or
its own executor) to `label_sae_features(..., executor=...)`.

An amortised run (`run.amortise`) needs more than a stream of batches: descents and
verifications (`descent.verify.VerifyBatch`) submitted as the rounds make them, on workers
held for the whole run. That is a `Pool` (`open_pool`): an executor with a ``pool`` method
(`RayExecutor`: one set of actors for the run) gives its own; any other runs each descent
through its ``run`` and each verification in this process, at once (`InlinePool`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ..descent.batch import LabelBatch, LabelFn, ResultSink, label_batch
from ..descent.verify import Checked, VerifyBatch, verify_batch
from ..evaluator.model import Evaluator
from ..records.config import LabelConfig


class Executor(Protocol):
    """Labels batches and reports every batch to `sink` as it goes (`ResultSink`)."""

    def run(self, batches: Iterable[LabelBatch], evaluator: Evaluator, config: LabelConfig,
            sink: ResultSink) -> None:
        """Label every batch; on a failure, report it to the sink and raise it."""


class Pool(Protocol):
    """Workers held for a whole run: descents and verifications go in as they are ready,
    and what comes back is handled on the driver (results into the sink, a verification's
    outcome to its callback, which may submit a descent)."""

    def descend(self, batch: LabelBatch) -> None:
        """Start `batch` (the sink hears of it now) and label it; its results go to the sink
        when they come. Raises an earlier task's failure."""

    def verify(self, batch: VerifyBatch, then: Callable[[Checked], None]) -> None:
        """Score `batch`'s candidates; `then` gets the outcome on the driver."""

    def wait(self) -> bool:
        """Handle at least one finished task (waiting for it); False when none was in
        flight."""

    def drain(self) -> None:
        """Handle every task in flight and those they submit; raise the first failure."""


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


class InlinePool:
    """A `Pool` that does every task at once: descents through `executor.run`,
    verifications on `evaluator` in this process."""

    def __init__(self, executor: Executor, evaluator: Evaluator, config: LabelConfig,
                 sink: ResultSink) -> None:
        self.executor, self.evaluator, self.config, self.sink = executor, evaluator, config, sink

    def descend(self, batch: LabelBatch) -> None:
        self.executor.run([batch], self.evaluator, self.config, self.sink)

    def verify(self, batch: VerifyBatch, then: Callable[[Checked], None]) -> None:
        try:
            checked = verify_batch(batch, self.evaluator, self.config)
        except Exception as err:
            self.sink.fail(batch.features, err)
            raise
        then(checked)

    def wait(self) -> bool:
        return False

    def drain(self) -> None:
        return None


@contextmanager
def open_pool(executor: Executor, evaluator: Evaluator, config: LabelConfig,
              sink: ResultSink) -> Iterator[Pool]:
    """The executor's own pool (its ``pool`` method, held for the ``with`` block), or an
    `InlinePool` around it."""
    own = getattr(executor, "pool", None)
    if own is None:
        yield InlinePool(executor, evaluator, config, sink)
        return
    with own(evaluator, config, sink) as pool:
        yield pool
