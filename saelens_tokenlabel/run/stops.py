"""Clean stops: SIGTERM and SIGINT as a `RunInterrupted` exception.

SLURM, Kubernetes and ``kill`` stop a job with SIGTERM, whose default action ends the process
at once: no ``finally`` runs, so the features it had claimed stay claimed until their lease
runs out and their rows say ``running``. Inside `clean_stops` both signals raise
`RunInterrupted` (a `KeyboardInterrupt`) in the main thread instead, where the run is: the
step or batch under way ends there (its features were not finished, so nothing of it is lost
that a rerun does not redo), `run.record.open_record` releases this process's claims (their
features go back to pending) and closes the store, and `tokenlabel` exits 143 (SIGTERM) or
130 (SIGINT) with one line saying what is saved. Every result finished before is in the
store already: each batch is committed when it is done.

A stop does not cut the store's own work short: `deferred` holds a signal back while a
transaction commits or claims are released, and raises it right after. The command line
installs `clean_stops` around every command; Python callers may use it too::

    with stl.run.clean_stops():
        sae.label_features(model, evaluator, corpus, run_dir="run")
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ..records.errors import RunInterrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals `clean_stops` turns into `RunInterrupted`."""


class _State:
    """What the handler needs: whether a stop is held back, and the one held."""

    depth = 0
    pending: int | None = None


def _handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal's API
    if _State.depth:
        _State.pending = signum  # raised when the section ends (`deferred`)
        return
    raise RunInterrupted(signum)


@contextmanager
def clean_stops() -> Iterator[None]:
    """Inside: SIGTERM and SIGINT raise `RunInterrupted` (module docstring); the earlier
    handlers come back on the way out. Outside the main thread (where Python delivers
    signals) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            before[sig] = signal.signal(sig, _handler)
        yield
    finally:
        for num, old in before.items():
            signal.signal(num, old)


@contextmanager
def deferred() -> Iterator[None]:
    """A section a stop must not cut in two (a commit, releasing claims): a signal that
    comes inside is raised as `RunInterrupted` when the section ends."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if not _State.depth and _State.pending is not None:
            signum, _State.pending = _State.pending, None
            raise RunInterrupted(signum)
