"""Plain text: ``feature<TAB>explanation`` lines; a first line whose feature is not a number
is a header; empty lines are skipped."""

from __future__ import annotations

from pathlib import Path

from ..jsonl import UNREADABLE, open_text
from .registry import ReadOptions, first_line, register_reader, unreadable
from .source import ExplanationSource, ExplanationSourceError, Keep, SourceInfo

TSV = "tsv"


class TsvReader:
    """A ``feature<TAB>explanation`` text file (a first line with a tab)."""

    name = TSV

    def sniff(self, path: Path) -> bool:
        return path.is_file() and "\t" in first_line(path)

    def read(self, path: Path, options: ReadOptions) -> ExplanationSource:
        try:
            return _read(path)
        except UNREADABLE as err:  # not UTF-8 past the first line, cut short
            raise unreadable(path, err) from None


def _read(path: Path) -> ExplanationSource:
    """The file's explanations, line by line (`TsvReader.read`)."""
    keep = Keep()
    first = True
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            feature, tab, text = line.partition("\t")
            is_first, first = first, False
            if not feature.strip().isdigit() or not tab:
                if is_first:
                    continue  # a header: the first line names the columns
                raise ExplanationSourceError(
                    f"{path}:{n}: expected feature<TAB>explanation with the feature a "
                    f"number, got {line[:60]!r}.")
            keep.add(int(feature), text, f"{path.name}:{n}")
    return keep.source(SourceInfo(TSV, str(path), 0))


register_reader(TsvReader(), builtin=True)
