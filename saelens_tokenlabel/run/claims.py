"""Claims: how several processes on one run folder split the features between them.

A `Claimer` hands out groups of features to label, each claimed in the run store first (one
atomic transaction, `RunStore.claim`), so a feature is labeled by one process only. It goes
through the features in labeling order; then, while features claimed by other processes are
unfinished, it waits for them, and takes over those whose claim expires (their process died).
So every process returns the whole run's labels, and a killed process's features are
labeled once its lease has run out.

The heartbeat is a thread (`Heartbeat`), started when the record binds the store and stopped
before the claims are released: every third of the lease it renews this process's claims,
over a database connection of its own, whatever the main thread is doing. So no batch,
however long, loses its claims while its process lives: one optimisation step of an 8B
evaluator, a batch that halves its passes on out-of-memory, a Ray driver blocked in
``ray.wait`` on its actors, all renew alike. Why a thread and not a callback in the step loop
(`descent/attempts.py`): the loop runs where the evaluator is (a Ray actor on another node
cannot reach the driver's store), a single step can itself outlast a short lease, and the
descent would have to learn about claims; and not a lease sized from measured step times,
which a slow first batch or a busy GPU would get wrong. The claimer also renews at batch
boundaries and while it waits for other processes (`heartbeat`), which costs nothing.

A claim therefore ends only with its process: released on the way out (normally or by an
exception), or, for a killed process, left to expire after the lease (`DEFAULT_LEASE_S`), or
freed at once by a process of the same host that sees its owner's pid is gone
(`store.owner_is_dead`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

from .store import RunStore, new_owner

DEFAULT_LEASE_S = 300.0
"""Default claim lease in seconds (see the module docstring)."""
_WINDOW = 512  # features looked at per claim transaction (SQLite binds one value each)

log = logging.getLogger(__name__)


class Claimer:
    """Claims features in `store` for this process (owner: host, pid, random token)."""

    def __init__(self, store: RunStore, lease_s: float = DEFAULT_LEASE_S,
                 poll_s: float | None = None) -> None:
        self.store, self.lease_s = store, float(lease_s)
        self.poll_s = poll_s if poll_s is not None else min(1.0, self.lease_s / 4)
        self.owner = new_owner()
        self._renewed = time.monotonic()
        self._beat: Heartbeat | None = None

    def start_heartbeat(self) -> None:
        """Renew this process's claims from a thread until `release` (module docstring)."""
        if self._beat is None:
            self._beat = Heartbeat(str(self.store.path), self.owner, self.lease_s).start()

    def groups(self, todo: Sequence[int], size: int) -> Iterator[list[int]]:
        """Groups of at most `size` features of `todo`, each claimed before it is yielded,
        in `todo`'s order; returns when every feature of `todo` is finished or claimed by
        this process."""
        pos = 0
        while pos < len(todo):  # first pass: what nobody holds, in order
            window = list(todo[pos : pos + _WINDOW])
            got = self.store.claim(window, size, self.owner, self.lease_s)
            if not got:
                pos += len(window)
                continue
            pos += window.index(got[-1]) + 1
            yield got
        yield from self._leftovers(todo, size)

    def _leftovers(self, todo: Sequence[int], size: int) -> Iterator[list[int]]:
        """Features other processes held in the first pass: wait until they finish, taking
        over any whose claim expires."""
        waited = False
        while True:
            left = self.store.unfinished(todo)
            held = self.store.claims(left)
            got = self._claim_any([f for f in left if held.get(f, {}).get("owner")
                                   != self.owner], size)
            if got:
                yield got
                continue
            others = {f: c for f, c in held.items() if c["owner"] != self.owner}
            if not others:
                return  # all finished, or in this process's own hands
            if not waited:
                log.info("waiting for %d features claimed by %s (their claims end by %s "
                         "unless renewed)", len(others),
                         ", ".join(sorted({c["owner"] for c in others.values()})),
                         time.strftime("%H:%M:%S", time.localtime(
                             max(c["expires_at"] for c in others.values()))))
                waited = True
            time.sleep(self.poll_s)
            self.heartbeat()

    def _claim_any(self, features: list[int], size: int) -> list[int]:
        for start in range(0, len(features), _WINDOW):
            got = self.store.claim(features[start : start + _WINDOW], size, self.owner,
                                   self.lease_s)
            if got:
                return got
        return []

    def heartbeat(self) -> None:
        """Renew this process's claims, at most every third of the lease."""
        now = time.monotonic()
        if now - self._renewed >= self.lease_s / 3:
            self.store.renew(self.owner, self.lease_s)
            self._renewed = now

    def release(self) -> None:
        """Stop the heartbeat, then give back every claim (best effort: a claim left behind
        expires anyway)."""
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        try:
            self.store.release(self.owner)
        except Exception as err:  # e.g. a full disk; the lease runs out on its own
            log.warning("could not release the claims of %s (%s); they expire after %gs",
                        self.owner, err, self.lease_s)


class Heartbeat:
    """A daemon thread that renews `owner`'s claims in the store at `path` every
    `interval_s` (module docstring), over a connection of its own (SQLite connections belong
    to their thread). `stop` ends it and waits for it; a renewal that fails (a full disk, a
    store locked past its timeout) is logged and tried again at the next beat."""

    def __init__(self, path: str, owner: str, lease_s: float,
                 interval_s: float | None = None) -> None:
        self.path, self.owner, self.lease_s = path, owner, float(lease_s)
        self.interval_s = interval_s if interval_s is not None else self.lease_s / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tokenlabel-heartbeat-{owner}",
                                        daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        store = None
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    if store is None:
                        store = RunStore(self.path)
                    store.renew(self.owner, self.lease_s)
                except Exception as err:  # the main thread's work goes on; try again
                    log.warning("could not renew the claims of %s in %s (%s); trying again "
                                "in %gs", self.owner, self.path, err, self.interval_s)
        finally:
            if store is not None:
                store.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
