"""Large runs: the resumable run store (`store.py`), Ray across GPUs (`ray_backend.py`,
imported only when asked), and what `tokenlabel status` / `tokenlabel export` show and write
(`report.py`)."""

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
