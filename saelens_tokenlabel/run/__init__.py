"""Runs (layer 5): `label_sae_features` composing the stages (`pipeline.py`) with its
`RunOptions` (`options.py`); executors that label prepared batches (`executors.py`, and Ray
across GPUs in `ray_backend.py`, imported only when asked); the resumable run store
(`store.py`) with claims so several processes share a run folder (`claims.py`); where
results go (`record.py`); and what `tokenlabel status` / `tokenlabel export` show and write
(`cli.py`, `export.py`)."""

from .claims import DEFAULT_LEASE_S, Claimer
from .executors import Executor, LocalExecutor
from .options import RunOptions
from .store import (
    FINISHED,
    STORE_FILENAME,
    UNFINISHED,
    RunMismatchError,
    RunStore,
    RunStoreError,
    RunStoreFullError,
    load_labelset,
    store_path,
)

__all__ = [
    "DEFAULT_LEASE_S",
    "Claimer",
    "Executor",
    "LocalExecutor",
    "RunOptions",
    "FINISHED",
    "STORE_FILENAME",
    "UNFINISHED",
    "RunMismatchError",
    "RunStore",
    "RunStoreError",
    "RunStoreFullError",
    "load_labelset",
    "store_path",
]
