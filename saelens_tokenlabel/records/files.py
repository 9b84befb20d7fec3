"""Writing files safely: one atomic write, one JSON spelling for results.

Layer 1 (results and configs): imports nothing from the package.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def json_finite(obj: Any) -> Any:
    """NaN and infinities as null: JSON has no spelling for them, and a diverged loss value
    must not stop a result from being saved."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_finite(v) for v in obj]
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON (non-finite floats as null), UTF-8 text kept readable."""
    return json.dumps(json_finite(obj), ensure_ascii=False, allow_nan=False)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside `path`, then rename it over `path`.

    A crash (or a full disk) never leaves half a file where a reader expects a whole one; the
    temporary file is removed when `write` fails. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a whole text (UTF-8)."""
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def atomic_write_lines(path: str | Path, lines: Iterable[str]) -> Path:
    """`atomic_write` of lines (each gets a newline), streamed: no whole text in memory."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")

    return atomic_write(path, write)


def not_utf8(path: str | Path, opener: Callable[..., Any] = open) -> str:
    """Where `path` (read through `opener`: ``open``, ``gzip.open``) stops being UTF-8, for
    a message: ``line 5 is not UTF-8 (byte 0xe9 at offset 3 in the line)``. A decoder's own
    error gives an offset into its read buffer, not into the file; lines are found here by
    reading the file again as bytes (UTF-8 never hides a newline byte inside a character)."""
    try:
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    return (f"line {n} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset "
                            f"{err.start} in the line)")
    except (OSError, EOFError) as err:
        return f"it is not UTF-8 and cannot be read again ({err})"
    return "it is not UTF-8"


def check_format(d: dict[str, Any], what: str, fmt: str, version: int) -> None:
    """A file's ``format`` must be `fmt` and its ``version`` at most `version`; else a
    one-line ValueError naming `what` was expected (the files this package writes carry
    both)."""
    if d.get("format") != fmt:
        raise ValueError(f"Not a {what} file (format {d.get('format')!r}).")
    if int(d.get("version", 0)) > version:
        raise ValueError(f"{what} format version {d['version']} is newer than this "
                         f"saelens_tokenlabel reads ({version}); upgrade it.")
