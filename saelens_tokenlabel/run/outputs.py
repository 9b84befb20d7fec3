"""A run's output files, written after its labels are safe in the run store.

The sidecar, the table, the Neuronpedia JSONL and the saved SAE are views of the store:
losing one loses no label. So a file that cannot be written (a read-only folder, a full disk)
does not stop the others; at the end one `OutputNotWrittenError` names every file not
written, says that the labels are safe in the store, and how to write the files later
(``tokenlabel export``). `tokenlabel label` and `tokenlabel export` both write through it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..records.errors import OutputNotWrittenError

T = TypeVar("T")
log = logging.getLogger(__name__)
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class Outputs:
    """Writes output files one by one into `folder`, noting those that fail (`write`);
    `check` raises for them. `store` is the run store the labels are safe in."""

    def __init__(self, folder: Path, store: Path, n_labels: int) -> None:
        self.folder, self.store, self.n_labels = Path(folder), Path(store), n_labels
        self.failed: list[tuple[str, BaseException]] = []

    def write(self, name: str, write: Callable[[], T],
              errors: tuple[type[BaseException], ...] = (OSError,)) -> T | None:
        """``write()``'s value; None when it raised one of `errors` (noted as `name` not
        written)."""
        try:
            return write()
        except errors as err:
            log.debug("%s not written", name, exc_info=True)
            self.failed.append((name, err))
            return None

    def check(self) -> None:
        """Raise `OutputNotWrittenError` when a file was not written (module docstring)."""
        if not self.failed:
            return
        names = ", ".join(name for name, _ in self.failed)
        err = self.failed[0][1]
        code = getattr(err, "errno", None)
        fix = ("free some space" if code in _FULL or _says_full(err) else
               f"make {self.folder} writable" if code in _READ_ONLY else "fix that")
        raise OutputNotWrittenError(
            f"Not written into {self.folder}: {names} ({_reason(err)}). The "
            f"{self.n_labels} labels are safe in {self.store}; {fix}, then `tokenlabel "
            f"export {self.store.parent}` writes them (--to another folder writes them "
            "elsewhere).")


def _reason(err: BaseException) -> str:
    """The error without the temporary file's name: what happened, not where."""
    strerror = getattr(err, "strerror", None)
    return strerror if strerror else " ".join(str(err).split())[:160]


def _says_full(err: BaseException) -> bool:
    """A library that words a full disk its own way (safetensors: ``IoError(Os { code: 28
    ...``)."""
    text = str(err)
    return "No space left" in text or "code: 28" in text
