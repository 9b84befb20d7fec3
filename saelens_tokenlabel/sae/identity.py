"""A corpus's identity by content: the hash of its documents (or of a file's bytes),
remembered so that a large file is read once, and a difference said in words.

The hash of documents is blake2b over each document's UTF-8 bytes, length-prefixed, in
order: the same for a list of strings, a text file and a JSONL file holding the same
documents. Beside it each document gets a short hash of its own (8 bytes), so that the first
document that differs from a run's corpus can be named.

The memo is a folder (``<cache root>/corpora``, `CacheConfig.corpora_dir`): ``index.json``
maps each file (and how it is read) to its hash and the file's size, modification time,
change time and inode when it was read; ``<sha>.docs`` holds the documents' short hashes. An
entry is used only while all four are what they were. ``touch -d`` or ``rsync -t`` can set a
modification time back, but nothing sets the change time, which every write of the content
moves; so the memo only saves reading the file again, it never decides identity (a file that
misses it is read, and the same documents give the same hash). Writing the memo is best
effort: a read-only folder only means reading again next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records.files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

DOC_HASH_BYTES = 8
"""Bytes of each document's own hash (``<sha>.docs``)."""
INDEX_FILENAME = "index.json"
MEMO_FORMAT = "tokenlabel-corpus-memo"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DocumentDigest:
    """The identity of a corpus's documents."""

    sha: str
    """blake2b-128 of the documents (module docstring), hex."""
    n: int
    """How many documents were read."""
    size: int | None
    """The file's size in bytes (None: in-memory texts)."""


_SEEN: dict[tuple[Any, ...], DocumentDigest | str] = {}
"""This process's memo: the same file is hashed once per run however often it is asked."""


def hash_documents(docs: Iterable[str]) -> tuple[str, int, bytes]:
    """(hash of the documents, how many, each one's short hash concatenated)."""
    h = hashlib.blake2b(digest_size=16)
    each = bytearray()
    n = 0
    for text in docs:
        b = text.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        each += hashlib.blake2b(b, digest_size=DOC_HASH_BYTES).digest()
        n += 1
    return h.hexdigest(), n, bytes(each)


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def digest_documents(docs: Iterator[str], path: Path | None, memo: Path | None,
                     how: str = "") -> DocumentDigest:
    """The digest of `docs`, the documents read from `path` (None: in-memory texts) in the way
    `how` names (e.g. the JSONL field). A file that has not changed since it was last hashed
    (this process, or the memo's index) is not read again."""
    if path is None:
        sha, n, each = hash_documents(docs)
        _remember_docs(memo, sha, each)
        return DocumentDigest(sha, n, None)
    key = (str(path.resolve()), how, *_stat(path))
    seen = _SEEN.get(key) or _recall(memo, key)
    if isinstance(seen, DocumentDigest):
        _SEEN[key] = seen
        return seen
    sha, n, each = hash_documents(docs)
    found = DocumentDigest(sha, n, int(key[2]))
    _SEEN[key] = found
    _remember_docs(memo, sha, each)
    _remember(memo, key, {"sha": sha, "n": n, "size": found.size})
    return found


def digest_file_bytes(path: Path, memo: Path | None) -> str:
    """blake2b-128 of a file's bytes (a local dataset folder's files), remembered as above."""
    key = (str(path.resolve()), "bytes", *_stat(path))
    seen = _SEEN.get(key) or _recall(memo, key)
    if isinstance(seen, DocumentDigest):
        return seen.sha
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    sha = h.hexdigest()
    _SEEN[key] = DocumentDigest(sha, 0, int(key[2]))
    _remember(memo, key, {"sha": sha, "n": 0, "size": int(key[2])})
    return sha


# ---------------------------------------------------------------------- the memo on disk
def _index(memo: Path) -> dict[str, Any]:
    try:
        data = json.loads((memo / INDEX_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _entry_name(key: tuple[Any, ...]) -> str:
    return f"{key[1]}|{key[0]}" if key[1] else str(key[0])


def _recall(memo: Path | None, key: tuple[Any, ...]) -> DocumentDigest | None:
    if memo is None:
        return None
    entry = _index(memo).get(_entry_name(key))
    if not isinstance(entry, dict) or entry.get("stat") != list(key[2:]):
        return None
    try:
        return DocumentDigest(str(entry["sha"]), int(entry["n"]), int(entry["size"]))
    except (KeyError, TypeError, ValueError):
        return None


def _remember(memo: Path | None, key: tuple[Any, ...], value: dict[str, Any]) -> None:
    """One entry per file and reading (the latest); concurrent writers may drop each other's
    entry, which only costs a read next time."""
    if memo is None:
        return
    files = _index(memo)
    files[_entry_name(key)] = {"stat": list(key[2:]), **value}
    body = {"format": MEMO_FORMAT, "version": 1, "files": files}
    try:
        atomic_write_text(memo / INDEX_FILENAME, json.dumps(body, indent=0, sort_keys=True))
    except OSError as err:
        log.debug("corpus memo %s not written (%s)", memo, err)


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _remember_docs(memo: Path | None, sha: str, each: bytes) -> None:
    if memo is None or (memo / f"{sha}.docs").is_file():
        return
    try:
        atomic_write(memo / f"{sha}.docs", lambda tmp: _write_bytes(tmp, each))
    except OSError as err:
        log.debug("corpus memo %s not written (%s)", memo, err)


def document_hashes(memo: Path | None, sha: str) -> bytes | None:
    """The short hashes of the documents of the corpus `sha`, if the memo has them."""
    if memo is None:
        return None
    try:
        return (memo / f"{sha}.docs").read_bytes()
    except OSError:
        return None


# ---------------------------------------------------------------------- words
def _describe(profile: dict[str, Any]) -> str:
    what = str(profile.get("corpus", "an unknown corpus"))
    facts = []
    if isinstance(profile.get("size"), int):
        facts.append(f"{profile['size']:,} bytes")
    if isinstance(profile.get("n_documents"), int):
        facts.append(f"{profile['n_documents']:,} documents")
    return what + (f" ({', '.join(facts)})" if facts else "")


def _first_difference(before: bytes, now: bytes) -> int | None:
    """Index of the first document whose short hash differs (None: one list is a prefix of
    the other)."""
    k = DOC_HASH_BYTES
    for i in range(min(len(before), len(now)) // k):
        if before[i * k : (i + 1) * k] != now[i * k : (i + 1) * k]:
            return i
    return None


def _shorten(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def explain_difference(now: dict[str, Any], before: dict[str, Any] | None,
                       documents: Callable[[], Iterator[str]], memo: Path | None) -> str:
    """Words for how the corpus `now` (a `Corpus.profile`) differs from `before` (the run's):
    both described, and the first document that differs (read from `documents()`, compared
    with the memo's short hashes of the run's corpus)."""
    if not before:
        return f"another corpus (now {_describe(now)}; the run did not record its own)"
    head = f"another corpus: now {_describe(now)}, the run's was {_describe(before)}"
    old_sha, new_sha = before.get("sha"), now.get("sha")
    if not (isinstance(old_sha, str) and isinstance(new_sha, str)):
        return head
    old = document_hashes(memo, old_sha)
    if old is None:
        return head + (" (the run's document hashes are not in the memo "
                       f"{memo}, so the first differing document is unknown)")
    new = document_hashes(memo, new_sha)
    if new is None:
        new = hash_documents(documents())[2]
    i = _first_difference(old, new)
    n_old, n_new = len(old) // DOC_HASH_BYTES, len(new) // DOC_HASH_BYTES
    if i is None:
        same = min(n_old, n_new)
        more = "more" if n_new > n_old else "fewer"
        return head + (f"; the first {same:,} documents are the same, it has "
                       f"{abs(n_new - n_old):,} {more}")
    text = next((t for j, t in enumerate(documents()) if j == i), "")
    return head + f"; document {i + 1:,} is the first that differs, now {_shorten(text)!r}"

