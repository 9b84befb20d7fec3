"""Runs (layer 5): `label_sae_features` composing the stages (`pipeline.py`) with its
`RunOptions` (`options.py`); executors that label prepared batches (`executors.py`, and Ray
across GPUs in `ray_backend.py`, imported only when asked); the resumable run store
(`store.py`) with claims so several processes share a run folder (`claims.py`); where
results go (`record.py`); the SAELens plugin (`plugin.py`) and the run exports behind
`tokenlabel export` (`export.py`).

Names load on first access (see `saelens_tokenlabel.records.lazy`), so `tokenlabel status` reads the
store without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records.lazy import lazy_exports

if TYPE_CHECKING:
    from .claims import DEFAULT_LEASE_S, Claimer
    from .executors import Executor, LocalExecutor
    from .options import RunOptions
    from .outputs import Outputs
    from .pipeline import label_sae_features
    from .stops import clean_stops
    from .store import (
        FINISHED,
        STORE_FILENAME,
        UNFINISHED,
        RunMismatchError,
        RunStore,
        RunStoreError,
        RunStoreFullError,
        StoreDamagedError,
        load_labelset,
        store_path,
    )
    from .storedb import StoreReadOnlyError

_EXPORTS = {
    "DEFAULT_LEASE_S": ".claims",
    "Claimer": ".claims",
    "Executor": ".executors",
    "LocalExecutor": ".executors",
    "RunOptions": ".options",
    "Outputs": ".outputs",
    "clean_stops": ".stops",
    "StoreReadOnlyError": ".storedb",
    "label_sae_features": ".pipeline",
    **dict.fromkeys(("FINISHED", "STORE_FILENAME", "UNFINISHED", "RunMismatchError",
                     "RunStore", "RunStoreError", "RunStoreFullError", "StoreDamagedError",
                     "load_labelset", "store_path"), ".store"),
}
__all__ = [
    "DEFAULT_LEASE_S",
    "FINISHED",
    "STORE_FILENAME",
    "UNFINISHED",
    "Claimer",
    "Executor",
    "LocalExecutor",
    "Outputs",
    "RunMismatchError",
    "RunOptions",
    "RunStore",
    "RunStoreError",
    "RunStoreFullError",
    "StoreDamagedError",
    "StoreReadOnlyError",
    "clean_stops",
    "label_sae_features",
    "load_labelset",
    "store_path",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=("plugin", "pipeline"))
