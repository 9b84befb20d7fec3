"""Imported by ``tokenlabel label --import tests.run.stoprun`` in the clean-stop tests: the
run's second batch writes the features it holds into the file ``$TOKENLABEL_TEST_STARTED``
names, then waits to be stopped. So a test signals the run at a known point: in the middle
of a batch, holding the claim of a feature whose row says ``running``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from saelens_tokenlabel.descent.batch import label_batch
from saelens_tokenlabel.run import executors, pipeline

_batches: list[list[int]] = []


def _label(batch: Any, evaluator: Any, config: Any) -> Any:
    _batches.append(list(batch.to_label))
    if len(_batches) == 2:
        Path(os.environ["TOKENLABEL_TEST_STARTED"]).write_text(
            " ".join(str(f) for f in batch.to_label))
        time.sleep(3600)
    return label_batch(batch, evaluator, config)


pipeline.LocalExecutor = lambda: executors.LocalExecutor(label=_label)  # type: ignore[misc]
