"""Runs (layer 6): a whole SAE labeled, resumably, by one process, several, or Ray actors.

Owns `label_sae_features` (`pipeline.py`) and its `RunOptions` (`options.py`), executors
(`executors.py`, Ray in `ray_backend.py`, imported only when asked), the run store and its
claims (`store.py`, its SQLite connection `storedb.py`, `claims.py`, `record.py`), clean stops
on SIGTERM and SIGINT (`stops.py`), the output files and the exports behind `tokenlabel
export` (`outputs.py`, `export.py`), the SAELens plugin (`plugin.py`, `plugin_hook.py`) and
the whole amortised mode (`amortise/`). May import every layer below: `records/`,
`formats/`, `evaluator/`, `descent/`, `toy/`, `sae/` (the executors, the store, the claims and
the export never import `sae/`).

Names load on first access (see `saelens_tokenlabel.records.lazy`), so `tokenlabel status`
reads the store without importing torch."""

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
