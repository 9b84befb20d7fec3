"""The labels of a run folder, for the report: from its run store when it has one, else
from its sidecar file; and its comparison with existing explanations, when it has one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..formats.comparison import COMPARE_JSON, Comparison
from ..formats.labelset import LabelSet
from ..records.names import RUN_STORE_FILENAME, SIDECAR_FILENAME
from ..records.result import LabelResult
from ..run.store import RunStore, RunStoreError, load_labelset

log = logging.getLogger(__name__)


def load_run(path: str | Path) -> LabelSet:
    """The labels of a run folder: from its run store (``run.sqlite``) when it has one, else
    from its sidecar file (``tokenlabel_labels.json``); `path` may also be a sidecar file."""
    path = Path(path)
    if path.is_file():
        return LabelSet.load(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; give the --out folder of "
                                "`tokenlabel label` (or a tokenlabel_labels.json file).")
    sidecar = path / SIDECAR_FILENAME
    if (path / RUN_STORE_FILENAME).is_file():
        try:
            return load_labelset(path)
        except RunStoreError as err:
            if not sidecar.is_file():
                # A ValueError: the command line prints it without a traceback.
                raise ValueError(str(err)) from err
            log.warning("%s Reading %s instead.", err, sidecar)
    if sidecar.is_file():
        return LabelSet.load(sidecar)
    raise FileNotFoundError(
        f"No labels in {path}: neither {RUN_STORE_FILENAME} nor {SIDECAR_FILENAME} is there. "
        "Give the --out folder of `tokenlabel label`, or a folder where labels.save(...) wrote "
        "them.")


class StoreResults:
    """A run store's finished results for `write_report` (`html.Results`): the features and
    the run's info at once, the results when the report reads them, one at a time."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.info: dict[str, Any] = store.get_meta("info", {})
        self._features = sorted(store.finished())
        self._set = set(self._features)

    def __iter__(self) -> Iterator[int]:
        return iter(self._features)

    def __contains__(self, feature: object) -> bool:
        return feature in self._set

    def __len__(self) -> int:
        return len(self._features)

    def results(self, features: list[int] | None) -> Iterator[LabelResult]:
        return self.store.iter_results(features)


@contextmanager
def open_run(path: str | Path) -> Iterator[LabelSet | StoreResults]:
    """The labels of a run folder for a report: its run store's results as they are read
    (`StoreResults`), or, without a store (or an unreadable one), `load_run`'s LabelSet."""
    path = Path(path)
    if path.is_dir() and (path / RUN_STORE_FILENAME).is_file():
        try:
            store = RunStore(path, create=False)
        except RunStoreError:
            yield load_run(path)  # it says what it does instead
            return
        with store:
            yield StoreResults(store)
        return
    yield load_run(path)


def load_comparison(path: str | Path) -> Comparison | None:
    """The run folder's ``compare.json`` (`tokenlabel compare`), or None when it has none
    (`path` may be a run folder or a file in it). An unreadable one is logged and left out."""
    path = Path(path)
    target = (path.parent if path.is_file() else path) / COMPARE_JSON
    if not target.is_file():
        return None
    try:
        return Comparison.load(target)
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s cannot be read (%s); the report leaves the comparison out.", target,
                    err)
        return None
