"""The labels of a run folder, for the report: from its run store when it has one, else
from its sidecar file."""

from __future__ import annotations

import logging
from pathlib import Path

from ..labelset import LabelSet
from ..names import RUN_STORE_FILENAME, SIDECAR_FILENAME
from ..run.store import RunStoreError, load_labelset

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
