"""`RunStore`: the resumable record of one labeling run, an embedded SQLite file.

Layout (``DIR/run.sqlite``)::

    features(feature INTEGER PRIMARY KEY, status TEXT, result TEXT, attempts INTEGER,
             error TEXT, started_at REAL, finished_at REAL,
             owner TEXT, claimed_at REAL, heartbeat_at REAL, expires_at REAL)
    meta(key TEXT PRIMARY KEY, value TEXT)      JSON values: identity, configs, info

The ``attempts`` column (its name kept for the files already written) counts the processes
that started a feature: `rows` calls it ``starts``, `summary` and the export table report
``retries`` (starts less one). It is not the optimisation's attempts (`LabelResult.attempts`,
restarts and refinements within one labeling).

A feature goes ``pending -> running -> ok | dead | unlabelable`` (finished: never labeled
again) or ``-> error`` (labeled again by the next run, as are ``running`` rows left behind by a
killed run). ``result`` holds `LabelResult.to_json()`.

Claims (leases) let several processes share one run folder: a process `claim`s unfinished
features before labeling them (``owner`` = host, pid and a random token; ``expires_at`` =
last heartbeat + the lease), and only labels what it got. A finished result, a recorded
failure, or `release` (a process that stops, normally or by an exception) clears the claim;
the claims of a killed process expire after their lease and are then taken over by another
process or a rerun. A heartbeat thread renews a live process's claims every third of the
lease (`run.claims.Heartbeat`), so no batch outlasts them. Stores written before claims existed
get the four columns on first open for writing (``ALTER TABLE``).

Why SQLite in WAL mode: every write below is one transaction, and a transaction either
commits whole or not at all, whatever kills the process. A run killed with SIGKILL loses only
the features it was labeling at that moment; the file is never left half-written. With
``synchronous=NORMAL`` a commit survives a killed process (not necessarily a power cut, which
can roll back the last commits but still cannot corrupt the file).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..formats.labelset import LabelSet
from ..records.errors import (
    RunMismatchError,
    RunStoreError,
    RunStoreFullError,
    StoreDamagedError,
    StoreReadOnlyError,
)
from ..records.files import json_finite
from ..records.names import RUN_STORE_FILENAME
from ..records.result import LabelResult
from .stops import deferred
from .storedb import connect, damaged

STORE_FILENAME = RUN_STORE_FILENAME
STORE_FORMAT_VERSION = 1
RUNNING, PENDING, ERROR = "running", "pending", "error"
UNFINISHED = (PENDING, RUNNING, ERROR)
"""Statuses of features a rerun labels (again). Every other status is a stored result (`ok`,
`dead`, `unlabelable`, or any status a later version adds) that a rerun skips."""
FINISHED = ("ok", "dead", "nonfinite", "unlabelable")
"""The result statuses this version writes."""
log = logging.getLogger(__name__)
_DONE = f"status NOT IN ({', '.join(repr(s) for s in UNFINISHED)})"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    feature INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    result TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    owner TEXT,
    claimed_at REAL,
    heartbeat_at REAL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS features_status ON features(status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ROW_COLUMNS = ("feature", "status", "attempts", "error", "started_at", "finished_at")
_ROW = ", ".join(_ROW_COLUMNS)
_UNPARSED = (ValueError, TypeError, KeyError)
"""What a stored result that does not parse raises (JSON, or a record of the wrong shape)."""
Explain = Callable[[str, dict[str, Any]], "str | None"]
"""Words for a key that does not match: ``explain(key, stored_meta)`` (`RunStore.check`)."""
_CLAIM_COLUMNS = {"owner": "TEXT", "claimed_at": "REAL", "heartbeat_at": "REAL",
                  "expires_at": "REAL"}
_SUMMARY_COLUMNS = {"verdict": "TEXT", "method": "TEXT", "polysemantic": "INTEGER"}
"""A finished result's verdict, method and polysemantic flag, as its JSON holds them, in
columns of their own: `tokenlabel status` counts them without reading a result."""
_INDEXES = (
    # Claims: a process's own rows, and the claimed rows, without a scan of the table.
    "CREATE INDEX IF NOT EXISTS features_owner ON features(owner)",
    # What `summary` reads of every row, so that it never reads a row's result: a scan of
    # this index touches a few dozen bytes a row, not the row's kilobytes of JSON.
    "CREATE INDEX IF NOT EXISTS features_progress ON features(status, finished_at, "
    "started_at, attempts)",
    "CREATE INDEX IF NOT EXISTS features_kinds ON features(status, verdict, method, "
    "polysemantic)",
    # The spans `summary` times the run by, in the order it sweeps them.
    "CREATE INDEX IF NOT EXISTS features_spans ON features(started_at, status, finished_at, "
    "heartbeat_at)",
)
_SUMMARY_BACKFILLED = "summary_columns"
"""Meta key: every stored result has its `_SUMMARY_COLUMNS` filled."""
_IN_CHUNK = 500
"""Features per ``IN (...)`` query (SQLite binds one value each)."""
_UNCLAIM = "owner = NULL, claimed_at = NULL, heartbeat_at = NULL, expires_at = NULL"


def new_owner() -> str:
    """A claim owner unique to this process and call: ``host:pid:token``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_is_dead(owner: str) -> bool:
    """Whether `owner` (``host:pid:token``) is a process of this host that no longer runs: its
    claims are free at once, so a rerun after ``kill -9`` does not wait out the lease. A claim
    from another host (a shared folder), or from a pid that runs (perhaps reused), is left to
    its lease."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def store_path(path: str | Path) -> Path:
    """``DIR`` (a folder, or a path without suffix) -> ``DIR/run.sqlite``; a file stays."""
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        return path / STORE_FILENAME
    return path


def _is_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "disk is full" in str(err)
    return False


LOCK_TIMEOUT_S = 30.0
"""How long a store operation waits for another process's write lock."""


def _wal_mode(db: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes opening a new store at once both try; the switch needs an
    exclusive lock and SQLite answers "database is locked" at once instead of calling its busy
    handler, so wait and retry here, up to `LOCK_TIMEOUT_S`."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.2, delay * 2)


class RunStore:
    """One run's features, statuses and results (module docstring). Not thread-safe; several
    processes may write it, each labeling only the features it has claimed."""

    def __init__(self, path: str | Path, *, create: bool = True, salvage: bool = False) -> None:
        self.path = store_path(path)
        self.salvage = salvage
        """Salvage mode (read only; `tokenlabel export`): reads skip what is damaged and note
        it in `damaged` instead of raising `StoreDamagedError`."""
        self.damaged: dict[int, str] = {}
        """Salvage mode: features whose row or result could not be read, and why."""
        if not create and not self.path.is_file():
            raise FileNotFoundError(
                f"No run store at {self.path}. A run writes it: tokenlabel label ... --out DIR "
                "(or label_sae_features(..., run_dir=DIR))."
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open(create, salvage)
        except StoreReadOnlyError:
            # A reader in a read-only folder: SQLite cannot make the WAL's index (-shm)
            # there. Without a -wal file every commit is in the file itself: read it as it is.
            if create or self.path.with_name(self.path.name + "-wal").exists():
                raise
            self._open(create, salvage, immutable=True)
        version = int(self.get_meta("format_version") or 0)
        if version > STORE_FORMAT_VERSION:
            self._db.close()
            raise RunStoreError(f"{self.path} has store format {version}, newer than this "
                                f"saelens_tokenlabel reads ({STORE_FORMAT_VERSION}); upgrade it.")

    def _open(self, create: bool, salvage: bool, immutable: bool = False) -> None:
        try:
            self._db = connect(self.path, LOCK_TIMEOUT_S, immutable=immutable)
            # Salvage reads row by row; one integrity check per damaged row would be slow.
            self._db.check_integrity = not salvage
            if not immutable:
                _wal_mode(self._db)
                self._db.execute("PRAGMA synchronous=NORMAL")
            if not create and not salvage:  # a reader (status) must not wait for the writer
                self._db.execute("SELECT COUNT(*) FROM features").fetchone()
            elif create:
                self._init_schema()
        except (sqlite3.DatabaseError, RunStoreError) as err:
            if _is_full(err):
                raise self._full(err) from err
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(err, RunStoreError):
                raise
            raise RunStoreError(
                f"{self.path} is not a readable run store ({err}). Pass another --out folder, "
                "or move this file away to start afresh."
            ) from err

    def _init_schema(self) -> None:
        with self._write():
            # Statement by statement: executescript would commit mid-transaction.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            # A store from before claims: add their columns (NULL: unclaimed).
            have = {r[1] for r in self._db.execute("PRAGMA table_info(features)")}
            for name, typ in {**_CLAIM_COLUMNS, **_SUMMARY_COLUMNS}.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE features ADD COLUMN {name} {typ}")
            for statement in _INDEXES:
                self._db.execute(statement)
            if self.get_meta("format_version") is None:
                self._set_meta("format_version", STORE_FORMAT_VERSION)
                self._set_meta("created_at", time.time())
            if not self.get_meta(_SUMMARY_BACKFILLED):
                # Once per store: results written before these columns existed.
                self._db.execute(
                    "UPDATE features SET verdict = json_extract(result, '$.verdict.value'), "
                    "method = COALESCE(json_extract(result, '$.method'), 'descended'), "
                    "polysemantic = json_extract(result, '$.polysemantic') IS NOT NULL "
                    "WHERE result IS NOT NULL")
                self._set_meta(_SUMMARY_BACKFILLED, True)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One atomic transaction; a full disk becomes a `RunStoreFullError`. A stop
        (`stops.clean_stops`) waits for it to commit."""
        with deferred(), self._transaction():
            yield

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (it does on SQLITE_FULL).
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as err:
            if _is_full(err):
                raise self._full(err) from err
            raise

    def _full(self, err: BaseException) -> RunStoreFullError:
        try:
            done = self.count_finished()
        except (sqlite3.Error, RunStoreError):
            done = None
        saved = (f"the {done} features finished before are saved in it" if done is not None
                 else "what was committed before is intact")
        return RunStoreFullError(
            f"The disk holding the run store {self.path} is full ({err}); {saved}, the batch "
            "being written is not. Free some space (or move the run folder to a larger disk) "
            "and rerun the same command: it resumes from the store."
        )

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return default if row is None else self._loads(row[0], f"its meta value {key!r}")
        except StoreDamagedError as err:
            if not self.salvage:
                raise
            log.warning("%s: the meta value %r cannot be read (%s)", self.path, key, err)
            return default

    def meta(self) -> dict[str, Any]:
        return {k: self._loads(v, f"its meta value {k!r}")
                for k, v in self._db.execute("SELECT key, value FROM meta")}

    def _loads(self, text: str, what: str) -> Any:
        """JSON `text` of the store; one that does not parse (a tampered or damaged value)
        is a `StoreDamagedError` naming `what`."""
        try:
            return json.loads(text)
        except (ValueError, TypeError) as err:
            raise damaged(self.path, f"{what} does not parse: {err}") from None

    def _result(self, feature: int, text: str) -> LabelResult:
        """The stored result of `feature`; a `StoreDamagedError` naming it when it does not
        parse."""
        try:
            return LabelResult.from_json(text)
        except _UNPARSED as err:
            raise damaged(self.path, f"the stored result of feature {feature} does not parse: "
                          f"{err}") from None

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                         (key, json.dumps(json_finite(value), ensure_ascii=False)))

    def set_meta(self, **values: Any) -> None:
        with self._write():
            for k, v in values.items():
                self._set_meta(k, v)

    def check(self, expected: dict[str, Any], names: dict[str, str] | None = None,
              explain: Explain | None = None) -> dict[str, Any]:
        """Raise `RunMismatchError` unless every key of `expected` (key -> JSON value) that
        the store has recorded matches; returns the keys it has not recorded yet. `names`
        words each key for the message; `explain(key, stored_meta)` may say in words what
        differs (else the differing fields are listed)."""
        stored = self.meta()
        for key, want in expected.items():
            if key in stored and stored[key] != _roundtrip(want):
                what = names.get(key, f"another {key.replace('_', ' ')}") if names else \
                    f"another {key.replace('_', ' ')}"
                words = explain(key, stored) if explain is not None else None
                diff = f": {words}" if words else _diff(stored[key], _roundtrip(want))
                raise RunMismatchError(
                    f"The run store {self.path} was made with {what}{diff}. Pass the same "
                    "inputs and settings to resume it, or another output folder to start a new "
                    "run."
                )
        return {k: v for k, v in expected.items() if k not in stored}

    def rebind(self, key: str, old: Any, new: Any) -> bool:
        """Record `new` for `key` where the store has `old` (one transaction): the same inputs,
        named otherwise by an earlier version. Returns whether it did."""
        with self._write():
            if self.get_meta(key) != _roundtrip(old):
                return False
            self._set_meta(key, new)
        return True

    def bind(self, expected: dict[str, Any], names: dict[str, str] | None = None,
             explain: Explain | None = None) -> None:
        """Record `expected` on first use; on a later run, raise `RunMismatchError` unless
        every key matches (`check`). Checked and recorded in one transaction, so two
        processes binding a new store at once cannot both win."""
        with self._write():
            for k, v in self.check(expected, names, explain).items():
                self._set_meta(k, v)

    # ------------------------------------------------------------------ features
    def add_features(self, features: Iterable[int]) -> None:
        """Register features as pending (those already known keep their row)."""
        with self._write():
            self._db.executemany(
                "INSERT OR IGNORE INTO features(feature, status) VALUES (?, ?)",
                ((int(f), PENDING) for f in features))

    def finished(self, features: Iterable[int] | None = None) -> set[int]:
        """Features with a final status (all, or those among `features`: looked up by
        feature, so the cost follows `features`, not the store)."""
        if features is None:
            return {r[0] for r in self._db.execute(f"SELECT feature FROM features WHERE {_DONE}")}
        return {f for (f,) in self._among("SELECT feature FROM features WHERE {} AND " + _DONE,
                                          features)}

    def _among(self, query: str, features: Iterable[int]) -> Iterator[tuple[Any, ...]]:
        """The rows of `query` (its ``{}`` a ``feature IN (...)`` test) for `features`, in
        chunks of `_IN_CHUNK` features."""
        feats = sorted({int(f) for f in features})
        for start in range(0, len(feats), _IN_CHUNK):
            chunk = feats[start:start + _IN_CHUNK]
            yield from self._db.execute(
                query.format(f"feature IN ({', '.join('?' * len(chunk))})"), chunk)

    def count_finished(self) -> int:
        return int(self._db.execute(f"SELECT COUNT(*) FROM features WHERE {_DONE}").fetchone()[0])

    def start(self, features: Sequence[int]) -> None:
        """Mark `features` as being labeled now (one more process start each)."""
        now = time.time()
        with self._write():
            self._db.executemany(
                "INSERT INTO features(feature, status, attempts, started_at) VALUES (?, ?, 1, ?)"
                " ON CONFLICT(feature) DO UPDATE SET status = excluded.status, "
                "attempts = attempts + 1, started_at = excluded.started_at, error = NULL",
                ((int(f), RUNNING, now) for f in features))

    def put(self, results: Sequence[LabelResult]) -> None:
        """Store finished results, all in one transaction."""
        now = time.time()
        rows = []
        for r in results:
            d = json_finite(r.to_dict())
            text = json.dumps(d, ensure_ascii=False, allow_nan=False)
            rows.append((int(r.feature), r.status, text, now, *_summary_cells(d)))
        with self._write():
            self._db.executemany(
                "INSERT INTO features(feature, status, result, attempts, finished_at, verdict, "
                "method, polysemantic) VALUES (?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT(feature) DO "
                "UPDATE SET status = excluded.status, result = excluded.result, error = NULL, "
                "finished_at = excluded.finished_at, verdict = excluded.verdict, "
                f"method = excluded.method, polysemantic = excluded.polysemantic, {_UNCLAIM}",
                rows)

    def fail(self, features: Sequence[int], error: str) -> None:
        """Record that labeling `features` raised `error`; the next run tries them again."""
        now = time.time()
        with self._write():
            self._db.executemany(
                f"UPDATE features SET status = ?, error = ?, finished_at = ?, {_UNCLAIM} "
                "WHERE feature = ?",
                ((ERROR, error, now, int(f)) for f in features))

    # ------------------------------------------------------------------ claims
    def has_claims(self) -> bool:
        """Whether the file has the claim columns (a reader does not add them)."""
        return "owner" in {r[1] for r in self._db.execute("PRAGMA table_info(features)")}

    def claim(self, features: Sequence[int], n: int, owner: str, lease_s: float) -> list[int]:
        """Claim for `owner` up to `n` of `features` (in their order) that are unfinished and
        unclaimed, or whose claim has expired; one atomic transaction, so two processes never
        get the same feature. Returns the features claimed."""
        want = [int(f) for f in features]
        if not want or n < 1:
            return []
        now = time.time()
        marks = ", ".join("?" * len(want))
        with self._write():
            dead = self._dead_owners(now)
            free = {f for (f,) in self._db.execute(
                f"SELECT feature FROM features WHERE feature IN ({marks}) "
                f"AND NOT ({_DONE}) AND (owner IS NULL OR expires_at < ? OR owner IN "
                f"({', '.join('?' * len(dead))}))", (*want, now, *dead))}
            got = [f for f in want if f in free][:n]
            self._db.executemany(
                "UPDATE features SET owner = ?, claimed_at = ?, heartbeat_at = ?, "
                "expires_at = ? WHERE feature = ?",
                ((owner, now, now, now + lease_s, f) for f in got))
        return got

    def _dead_owners(self, now: float) -> list[str]:
        """Owners of unexpired claims that are dead processes of this host (`owner_is_dead`)."""
        owners = self._db.execute("SELECT DISTINCT owner FROM features WHERE owner > '' "
                                  "AND expires_at >= ?", (now,))
        return [o for (o,) in owners if owner_is_dead(o)]

    def renew(self, owner: str, lease_s: float) -> None:
        """Heartbeat: extend every claim of `owner` by `lease_s` from now."""
        now = time.time()
        with self._write():
            self._db.execute("UPDATE features SET heartbeat_at = ?, expires_at = ? "
                             "WHERE owner = ?", (now, now + lease_s, owner))

    def release(self, owner: str) -> None:
        """Give up every claim of `owner`: its unfinished features are free again, and those
        it had started are pending again (nothing labels them now; a rerun does)."""
        with self._write():
            self._db.execute(f"UPDATE features SET status = CASE WHEN status = ? THEN ? ELSE "
                             f"status END, {_UNCLAIM} WHERE owner = ?", (RUNNING, PENDING, owner))

    def claims(self, features: Iterable[int] | None = None, expired: bool = False
               ) -> dict[int, dict[str, Any]]:
        """Live claims on unfinished features (with `expired`, expired ones and those of dead
        processes of this host too): feature -> owner, claimed_at, heartbeat_at, expires_at."""
        if not self.has_claims():
            return {}
        want = None if features is None else {int(f) for f in features}
        until = float("-inf") if expired else time.time()
        dead = set() if expired else set(self._dead_owners(until))
        # `owner > ''` (every owner is a non-empty string): the planner takes the owner
        # index, so the cost follows the claimed rows, not the store.
        cur = self._db.execute(
            "SELECT feature, owner, claimed_at, heartbeat_at, expires_at FROM features "
            f"WHERE owner > '' AND expires_at >= ? AND NOT ({_DONE})", (until,))
        return {f: {"owner": o, "claimed_at": c, "heartbeat_at": h, "expires_at": e}
                for f, o, c, h, e in cur if (want is None or f in want) and o not in dead}

    def unfinished(self, features: Iterable[int]) -> list[int]:
        """Those of `features` (in their order) without a final status."""
        feats = [int(f) for f in features]
        done = self.finished(feats)
        return [f for f in feats if f not in done]

    def results(self, features: Iterable[int] | None = None) -> list[LabelResult]:
        """Finished results, by feature index (all, or those among `features`: looked up by
        feature)."""
        return list(self.iter_results(features))

    def iter_results(self, features: Iterable[int] | None = None) -> Iterator[LabelResult]:
        """`results`, one at a time: one query, rows read as they are used, so a reader of
        a large store holds one result at a time."""
        if self.salvage:
            yield from self._salvage_results(None if features is None else
                                             {int(f) for f in features})
            return
        q = "SELECT feature, result FROM features WHERE {} result IS NOT NULL AND " + _DONE
        rows = (self._db.execute(q.format("") + " ORDER BY feature") if features is None else
                self._among(q.format("{} AND") + " ORDER BY feature", features))
        for f, text in rows:
            yield self._result(f, text)

    def rows(self) -> list[dict[str, Any]]:
        """Every feature's row (without the result JSON), by feature index: ``starts`` is how
        many processes began labeling it (the ``attempts`` column)."""
        if self.salvage:
            try:
                raw = list(self._db.execute(f"SELECT {_ROW} FROM features ORDER BY feature"))
            except StoreDamagedError:
                raw = self._rows_one_by_one()
            # A feature whose result did not parse (`iter_results`) is left out, as its row.
            return [{("starts" if k == "attempts" else k): v
                     for k, v in zip(_ROW_COLUMNS, row, strict=True)}
                    for row in raw if int(row[0]) not in self.damaged]
        cur = self._db.execute("SELECT feature, status, attempts AS starts, error, started_at, "
                               "finished_at FROM features ORDER BY feature")
        cols = [c[0] for c in cur.description]
        # fetchall: small rows, one call instead of one per row through the translation.
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def _salvage_results(self, want: set[int] | None) -> Iterator[LabelResult]:
        """Salvage mode's finished results (among `want`), streamed: the table read in feature
        order, a result that does not parse noted in `damaged`; when a damaged page stops the
        read, each feature after the last one read is looked up by its key, which reads only
        the pages on its own path (those on a damaged page into `damaged`)."""
        last = -1
        try:
            for f, status, text in self._db.execute(
                    "SELECT feature, status, result FROM features ORDER BY feature"):
                last = int(f)
                r = self._salvage_one(last, status, text, want)
                if r is not None:
                    yield r
            return
        except StoreDamagedError:
            pass
        for f in self._feature_ids():
            if f <= last:
                continue
            try:
                row = self._db.execute("SELECT status, result FROM features WHERE feature = ?",
                                       (f,)).fetchone()
            except StoreDamagedError:
                self.damaged[f] = "its page of the file is damaged"
                continue
            r = None if row is None else self._salvage_one(f, row[0], row[1], want)
            if r is not None:
                yield r

    def _salvage_one(self, feature: int, status: str, text: str | None,
                     want: set[int] | None) -> LabelResult | None:
        """A row's finished result, or None (unfinished, not wanted, or noted in `damaged`:
        its result does not parse)."""
        if text is None or status in UNFINISHED or (want is not None and feature not in want):
            return None
        try:
            return LabelResult.from_json(text)
        except _UNPARSED as err:
            self.damaged[feature] = f"its stored result does not parse ({err})"
            return None

    def _rows_one_by_one(self) -> list[tuple[Any, ...]]:
        """Each feature's row looked up by its key; those on a damaged page into `damaged`."""
        out = []
        for f in self._feature_ids():
            try:
                row = self._db.execute(f"SELECT {_ROW} FROM features WHERE feature = ?",
                                       (f,)).fetchone()
            except StoreDamagedError:
                self.damaged[f] = "its page of the file is damaged"
                continue
            if row is not None:
                out.append(row)
        return out

    def _feature_ids(self) -> list[int]:
        """The features of the store: from the status index (its own pages), else every
        index below the run's d_sae."""
        try:
            return sorted(f for (f,) in self._db.execute(
                "SELECT feature FROM features INDEXED BY features_status"))
        except StoreDamagedError:
            d_sae = (self.get_meta("info") or {}).get("d_sae")
            if not isinstance(d_sae, int):
                raise
            return list(range(d_sae))

    def labelset(self, features: Iterable[int] | None = None) -> LabelSet:
        """The finished results as a `LabelSet`, with the run's recorded info."""
        return LabelSet(self.results(features), self.get_meta("info", {}))

    def summary(self, last: int = 5, now: float | None = None) -> dict[str, Any]:
        """What `tokenlabel status` shows, right while a run goes on: counts by status (a
        ``running`` row whose process holds no live claim counts as ``interrupted``), the
        live claims and their owners, process starts and retries, time spent labeling, rate
        and what is left, errors and the last features finished. `now`: the clock (tests)."""
        now = time.time() if now is None else now
        counts = dict(self._db.execute("SELECT status, COUNT(*) FROM features GROUP BY status"))
        # Then: a recent result that does not parse is named (`StoreDamagedError`).
        recent = self._recent(last, [k for k in counts if k not in UNFINISHED])
        total = sum(counts.values())
        live = self.claims()
        running = {f for (f,) in self._db.execute(
            "SELECT feature FROM features WHERE status = ?", (RUNNING,))}
        stale = running - set(live)
        if running:
            counts[RUNNING] = len(running) - len(stale)
            if not counts[RUNNING]:
                del counts[RUNNING]
        if stale:
            counts["interrupted"] = len(stale)
        (n_done,) = self._db.execute(f"SELECT COUNT(*) FROM features WHERE {_DONE}").fetchone()
        busy, n_timed = self._busy(live, now)
        owners: dict[str, list[int]] = {}
        for f, c in sorted(live.items()):
            owners.setdefault(c["owner"], []).append(f)
        left = total - n_done
        rate = n_timed / busy if busy and n_timed else None
        return {
            "path": str(self.path),
            "total": total,
            "finished": n_done,
            "counts": counts,
            **self._result_counts(),
            "retries": self._retries(),
            "errors": [{"feature": f, "starts": a, "error": e} for f, a, e in self._db.execute(
                "SELECT feature, attempts, error FROM features WHERE status = ? "
                "ORDER BY finished_at DESC LIMIT ?", (ERROR, last))],
            "elapsed_s": busy,
            "rate_per_s": rate,
            "eta_s": left / rate if rate and left else None,
            "last": recent,
            "created_at": self.get_meta("created_at"),
            "claimed": len(live),
            "claim_owners": {o: len(fs) for o, fs in owners.items()},
            "claims": owners,
            "last_heartbeat_at": max((c["heartbeat_at"] for c in live.values()
                                      if c["heartbeat_at"] is not None), default=None),
            "interrupted": sorted(stale),
        }

    def _busy(self, live: dict[int, dict[str, Any]], now: float) -> tuple[float | None, int]:
        """Seconds during which some feature was being labeled (the union of each feature's
        span, from its start to its result, to now while a live claim holds it, or to its
        last heartbeat), so that time between two runs of a resumed folder does not count;
        and how many finished features have such a span (the rate's numerator)."""
        # A store from before claims, opened to read, has no heartbeat column.
        beat = "heartbeat_at" if self.has_claims() else "NULL"
        claimed = ", ".join(str(int(f)) for f in live)
        # Each feature's span [a, b]; swept in start order, a span adds what it reaches past
        # the furthest end before it (a window over the spans index: no row is read whole,
        # nothing grows in Python with the store).
        (busy, n_spans, n_timed), = self._db.execute(f"""
            WITH spans AS (SELECT started_at AS a, MAX(started_at, CASE
                    WHEN status NOT IN ('{PENDING}', '{RUNNING}') THEN
                        CASE WHEN finished_at >= started_at THEN finished_at ELSE started_at END
                    WHEN feature IN ({claimed}) THEN ?
                    ELSE COALESCE({beat}, started_at) END) AS b,
                    status NOT IN ({", ".join(repr(u) for u in UNFINISHED)}) AS timed
                FROM features WHERE started_at IS NOT NULL),
            swept AS (SELECT a, b, timed, MAX(b) OVER (ORDER BY a, b ROWS BETWEEN UNBOUNDED
                    PRECEDING AND 1 PRECEDING) AS reach FROM spans)
            SELECT TOTAL(MAX(0.0, b - MAX(a, COALESCE(reach, a)))), COUNT(*),
                   COALESCE(SUM(timed), 0) FROM swept""", (now,)).fetchall()
        return (float(busy) if n_spans else None), int(n_timed)

    def _retries(self) -> dict[str, int]:
        """Process starts per feature (the ``attempts`` column: one per process that began
        labeling it), not the optimisation's attempts (`LabelResult.attempts`): ``starts`` in
        all, ``retried`` features started more than once, ``max`` retries of one feature."""
        starts, most, retried = self._db.execute(
            "SELECT COALESCE(SUM(attempts), 0), COALESCE(MAX(attempts), 0), "
            "COALESCE(SUM(attempts > 1), 0) FROM features").fetchone()
        return {"starts": int(starts), "retried": int(retried), "max": max(0, int(most) - 1)}

    def _recent(self, last: int, statuses: list[str]) -> list[dict[str, Any]]:
        """The last `last` features finished (with one of `statuses`), each as `tokenlabel
        status` shows it."""
        # Which ones first: the last of each finished status, read backwards off the index
        # on (status, finished_at), a few rows each; then only their results.
        newest = sorted((row for s in statuses for row in self._db.execute(
            "SELECT finished_at, feature FROM features WHERE status = ? "
            "ORDER BY finished_at DESC, feature DESC LIMIT ?", (s, last))),
            key=lambda row: (row[0] is not None, row[0] or 0.0, row[1]), reverse=True)
        recent_ids = [f for _, f in newest[:last]]
        rows = {f: (s, text) for f, s, text in self._among(
            "SELECT feature, status, result FROM features WHERE {}", recent_ids)}
        recent = []
        for f in recent_ids:
            s, text = rows[f]
            r = self._result(f, text)
            recent.append({"feature": f, "status": s, "label": r.label,
                           "verdict": r.verdict.value if r.verdict else None,
                           "evidence": r.verdict.short() if r.verdict else None,
                           "probability": r.probability, "converged": r.converged,
                           "steering_score": r.metrics.get("steering_score"),
                           "method": r.method,
                           "polysemantic": (r.polysemantic.describe()
                                            if r.polysemantic is not None else None)})
        return recent

    def _result_counts(self) -> dict[str, Any]:
        """Polysemantic flags, verdicts and label methods of the finished results, counted
        from their own columns (an index; no result is read); in a store written before
        those columns, by SQLite's JSON functions."""
        if not self.get_meta(_SUMMARY_BACKFILLED):
            return self._result_counts_json()
        poly, verdicts, methods = 0, Counter[str](), Counter[str]()
        # One scan of the index on these columns; method is set with every result.
        for status, verdict, method, flagged, n in self._db.execute(
                "SELECT status, COALESCE(verdict, 'not recorded'), method, polysemantic, "
                f"COUNT(*) FROM features WHERE {_DONE} AND method IS NOT NULL "
                "GROUP BY 1, 2, 3, 4"):
            poly += n if flagged else 0
            verdicts[verdict] += n
            if status == "ok":
                methods[method] += n
        return {"polysemantic": poly, "verdicts": dict(verdicts), "methods": dict(methods)}

    def _result_counts_json(self) -> dict[str, Any]:
        """`_result_counts` of a store written before the summary columns (opened only to
        read): by SQLite's JSON functions on every result."""
        (poly,) = self._db.execute(
            f"SELECT COUNT(*) FROM features WHERE {_DONE} AND CASE WHEN json_valid(result) "
            "THEN json_extract(result, '$.polysemantic') END IS NOT NULL").fetchone()
        # Verdicts (`records.verdict`); a result written before them has none stored.
        verdicts = dict(self._db.execute(
            f"SELECT COALESCE(json_extract(result, '$.verdict.value'), 'not recorded'), "
            f"COUNT(*) FROM features WHERE {_DONE} AND json_valid(result) GROUP BY 1"))
        # How labels were found (`LabelResult.method`; absent: by descent).
        methods = dict(self._db.execute(
            f"SELECT COALESCE(json_extract(result, '$.method'), 'descended'), COUNT(*) FROM "
            f"features WHERE {_DONE} AND status = 'ok' AND json_valid(result) GROUP BY 1"))
        return {"polysemantic": int(poly), "verdicts": verdicts, "methods": methods}


def _summary_cells(d: dict[str, Any]) -> tuple[str | None, str, int]:
    """A result's `_SUMMARY_COLUMNS`, from its stored JSON (what ``json_extract`` would
    read)."""
    verdict = d.get("verdict")
    return (verdict.get("value") if isinstance(verdict, dict) else None,
            d.get("method") or "descended", int(d.get("polysemantic") is not None))


def load_labelset(directory: str | Path, features: Iterable[int] | None = None) -> Any:
    """The finished labels of the run in `directory` (its ``run.sqlite``) as a `LabelSet`."""
    with RunStore(directory, create=False) as store:
        return store.labelset(features)


def _roundtrip(value: Any) -> Any:
    """`value` as it reads back from the store (tuples as lists, int keys as strings)."""
    return json.loads(json.dumps(json_finite(value), ensure_ascii=False))


def _diff(stored: Any, want: Any) -> str:
    if isinstance(stored, dict) and isinstance(want, dict):
        keys = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
        if keys:
            shown = ", ".join(f"{k}: {stored.get(k)!r} there, {want.get(k)!r} now"
                              for k in keys[:3])
            return f" ({shown})"
    return ""
