"""The run store's SQLite connection, and what its faults become.

Every statement of `RunStore` goes through a `StoreConnection`, whose cursors turn SQLite's
own errors of a damaged or unwritable file into the package's, each one line that names the
file and the way out, whatever statement meets them (a read deep inside ``tokenlabel
status`` as much as a write of the run):

* SQLITE_CORRUPT ("database disk image is malformed") and SQLITE_NOTADB: `StoreDamagedError`,
  with the first problem ``PRAGMA integrity_check`` finds; ``tokenlabel export`` still writes
  every result that can be read (`RunStore` in salvage mode);
* SQLITE_READONLY, SQLITE_CANTOPEN and SQLITE_PERM: `StoreReadOnlyError`; what the file holds
  is intact. A reader (`tokenlabel status`, `export`) then opens it again as an immutable
  file (`connect(..., immutable=True)`): a read-only folder refuses the WAL's index file, not
  a read.

Other errors (a lock held too long, a full disk: `RunStore._write` words that one) pass as
SQLite raised them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..records.errors import RunStoreError, StoreDamagedError, StoreReadOnlyError

_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_NOT_WRITABLE = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}


def connect(path: Path, timeout: float, immutable: bool = False) -> StoreConnection:
    """The store file at `path`, opened for `RunStore` (transactions are its own:
    ``isolation_level=None``); with `immutable`, read only, as a file nothing writes (no
    lock, no WAL index: what a read-only folder allows)."""
    target: str | Path = path
    if immutable:
        target = path.resolve().as_uri() + "?mode=ro&immutable=1"
    try:
        db = sqlite3.connect(target, timeout=timeout, isolation_level=None,
                             factory=StoreConnection, uri=immutable)
    except sqlite3.Error as err:
        raise store_error(path, err, None) or err from err
    db.store_path = path
    return db


class StoreConnection(sqlite3.Connection):
    """A connection whose statements raise the package's errors for a damaged or read-only
    store (module docstring)."""

    store_path: Path
    check_integrity: bool = True
    """Whether a damaged file's error quotes ``PRAGMA integrity_check`` (a full scan: off
    while salvaging row by row)."""

    def cursor(self, factory: Any = None) -> Any:  # noqa: ARG002 - always ours
        return super().cursor(_Cursor)

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any) -> Any:
        return self.cursor().executemany(sql, parameters)


class _Cursor(sqlite3.Cursor):
    """Runs and reads statements with SQLite's errors translated (`translated`)."""

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        with translated(self.connection):
            return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any) -> Any:
        with translated(self.connection):
            return super().executemany(sql, parameters)

    def fetchone(self) -> Any:
        with translated(self.connection):
            return super().fetchone()

    def fetchall(self) -> list[Any]:
        with translated(self.connection):
            return super().fetchall()

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        with translated(self.connection):
            return super().fetchmany(size)

    def __next__(self) -> Any:
        with translated(self.connection):
            return super().__next__()


@contextmanager
def translated(db: Any) -> Iterator[None]:
    """SQLite's errors of a damaged or unwritable file as `store_error`'s; others as they
    are."""
    try:
        yield
    except sqlite3.Error as err:
        mapped = store_error(getattr(db, "store_path", Path("run.sqlite")), err, db)
        if mapped is None:
            raise
        raise mapped from err


def _code(err: sqlite3.Error) -> int | None:
    code = getattr(err, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # the primary code of an extended one


def store_error(path: Path, err: sqlite3.Error, db: Any) -> RunStoreError | None:
    """The package's error for SQLite's `err` on the store at `path`, or None when it is not
    about the file being damaged or unwritable."""
    code = _code(err)
    if code == sqlite3.SQLITE_NOTADB:
        return StoreDamagedError(
            f"{path} is not a readable run store (SQLite: {err}): nothing in it can be read. "
            "Pass another --out folder, or move this file away to start afresh.")
    if code in _DAMAGED:
        return damaged(path, f"SQLite: {err}; {integrity_problem(db)}")
    if code in _NOT_WRITABLE:
        return StoreReadOnlyError(
            f"Cannot write the run store {path} (SQLite: {err}): its folder or the file is "
            "read-only. What it holds is intact and can be read (tokenlabel status / export "
            f"{path.parent}); make {path.parent} writable, or pass another --out (run_dir) "
            "to label there.")
    return None


def integrity_problem(db: Any) -> str:
    """The first problem ``PRAGMA integrity_check`` reports, or why it cannot run. Run on the
    plain connection: a failure here must not be translated again."""
    if db is None or not getattr(db, "check_integrity", True):
        return "PRAGMA integrity_check not run"
    try:
        rows = sqlite3.Connection.execute(db, "PRAGMA integrity_check(1)").fetchall()
    except sqlite3.Error as err:
        return f"PRAGMA integrity_check fails: {err}"
    first = str(rows[0][0]) if rows else "ok"
    return ("PRAGMA integrity_check passes" if first == "ok" else
            f"PRAGMA integrity_check failed: {' '.join(first.split())[:120]}")


def damaged(path: Path, what: str) -> StoreDamagedError:
    """The one line for a damaged store at `path` (`what` is damaged), how to recover what
    can still be read, and how to go on."""
    return StoreDamagedError(
        f"{path} is not a readable run store: it is damaged ({what}). `tokenlabel export "
        f"{path.parent} --to NEW_FOLDER` writes every result that can still be read; the "
        "same `tokenlabel label` command with --out NEW_FOLDER then labels only what is "
        "missing.")
