"""Large runs: the resumable run store (`store.py`), Ray across GPUs (`ray_backend.py`,
imported only when asked), `label_sae_features` (`pipeline.py`), the SAELens plugin
(`plugin.py`) and the run exports behind `tokenlabel export` (`export.py`).

Names load on first access (see `saelens_tokenlabel.lazy`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, ".store"))
