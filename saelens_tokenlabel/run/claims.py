"""Claims: how several processes on one run folder split the features between them.

A `Claimer` hands out groups of features to label, each claimed in the run store first (one
atomic transaction, `RunStore.claim`), so a feature is labeled by one process only. It goes
through the features in labeling order; then, while features claimed by other processes are
unfinished, it waits for them, and takes over those whose claim expires (their process died).
So every process returns the whole run's labels, and a killed process's features are
labeled once its lease has run out.

The heartbeat is thread-free: the claimer renews its claims at every batch boundary (the sink
calls `heartbeat` when a batch starts and when results come in) and while it waits. The lease
must therefore outlast the longest batch: a claim renewed less often than the lease can be
taken over by another process, which then labels the features again (the last result wins;
nothing breaks, but work is repeated). The default lease (`DEFAULT_LEASE_S`) is generous for
that reason; the price is that the features of a killed process wait that long before
another process takes them over.
"""

from __future__ import annotations

import logging
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
        """Give back every claim (best effort: a claim left behind expires anyway)."""
        try:
            self.store.release(self.owner)
        except Exception as err:  # e.g. a full disk; the lease runs out on its own
            log.warning("could not release the claims of %s (%s); they expire after %gs",
                        self.owner, err, self.lease_s)
