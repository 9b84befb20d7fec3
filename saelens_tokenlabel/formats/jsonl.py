"""JSON Lines files, plain or gzipped, and Neuronpedia's ``batch-N.jsonl.gz`` folders: what
the Neuronpedia writer and the explanation readers both read. Plain Python."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import IO

BATCH_RE = re.compile(r"^batch-(\d+)\.jsonl(?:\.gz)?$")
"""Neuronpedia's batch file names (``batch-autointerp.py``, ``export-data.py``)."""
UNREADABLE = (OSError, EOFError, UnicodeDecodeError, zlib.error)
"""What a corrupt, truncated or non-UTF-8 (gzipped) file raises while being read."""


def open_text(path: Path) -> IO[str]:
    """`path` as UTF-8 text, through gzip when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def batch_files(folder: Path) -> dict[int, list[Path]]:
    """``batch-N.jsonl[.gz]`` files of `folder` by N (files of one N by name); none when the
    folder does not exist."""
    out: dict[int, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            m = BATCH_RE.match(p.name)
            if m and p.is_file():
                out.setdefault(int(m.group(1)), []).append(p)
    return out


def batch_order(folder: Path) -> list[Path]:
    """Every batch file of `folder` in batch order (N as a number)."""
    return [p for _, files in sorted(batch_files(folder).items()) for p in files]
