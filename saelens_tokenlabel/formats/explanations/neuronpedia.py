"""Neuronpedia's explanation exports: JSON Lines, plain (``.jsonl``) or gzipped
(``.jsonl.gz``), one explanation per line with ``index`` (the feature, a string) and
``description``; or a folder of ``batch-N.jsonl.gz`` (or ``.jsonl``) files, the layout of
Neuronpedia's dataset exports (``.../<model>/<source>/explanations/batch-0.jsonl.gz``). An
export often holds several explanations of one feature (one per explainer, ``typeName`` and
``explanationModelName``): ``ReadOptions.type_name`` keeps one type only."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..jsonl import UNREADABLE, batch_order, open_text
from .registry import (
    ReadOptions,
    explanations_folder,
    first_line,
    register_reader,
    unreadable,
)
from .source import ExplanationSource, ExplanationSourceError, Keep, SourceInfo

NEURONPEDIA_JSONL = "neuronpedia-jsonl"
NEURONPEDIA_BATCHES = "neuronpedia-batches"


def _json_lines(files: Iterable[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each non-empty line of `files` as (``file:line``, its JSON object)."""
    for path in files:
        try:
            yield from _lines_of(path)
        except UNREADABLE as err:
            raise unreadable(path, err) from None


def _lines_of(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ExplanationSourceError(
                    f"{path}:{n} is not JSON ({err.msg}); a Neuronpedia export has one "
                    "JSON object per line.") from None
            if not isinstance(obj, dict):
                raise ExplanationSourceError(f"{path}:{n} is not a JSON object; a "
                                             "Neuronpedia export has one per line.")
            yield f"{path.name}:{n}", obj


def _index(value: Any, where: str) -> int:
    """Neuronpedia's ``index``: the feature as a string of digits (an int is taken too)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ExplanationSourceError(f"{where}: 'index' is {value!r}; a Neuronpedia explanation's "
                                 "index is the feature number as a string, e.g. \"42\".")


def read_records(files: list[Path], given: Path, fmt: str, type_name: str | None
                 ) -> ExplanationSource:
    """Neuronpedia explanation records from `files`, one SAE's, the first of a feature kept."""
    keep, ids, other_types = Keep(), set(), 0
    for where, obj in _json_lines(files):
        if "description" not in obj or "index" not in obj:
            raise ExplanationSourceError(
                f"{where}: no 'description' and 'index'; Neuronpedia explanation records have "
                "both (the explanation and the feature).")
        if type_name is not None and obj.get("typeName") != type_name:
            other_types += 1
            continue
        if obj.get("modelId") and obj.get("layer"):
            ids.add(f"{obj['modelId']}/{obj['layer']}")
        keep.add(_index(obj["index"], where), str(obj["description"] or ""), where,
                 obj.get("typeName"), obj.get("explanationModelName"))
    if len(ids) > 1:
        raise ExplanationSourceError(
            f"--explanations {given}: explanations of several SAEs ({', '.join(sorted(ids))}); "
            "give the export of the SAE this run labeled.")
    if not keep.kept and type_name is not None and other_types:
        raise ExplanationSourceError(f"--explanations {given}: no explanation has typeName "
                                     f"{type_name!r}; leave out --type-name or pick another.")
    return keep.source(SourceInfo(fmt, str(given), 0, skipped=other_types,
                                  type_name=type_name, neuronpedia_ids=tuple(sorted(ids))))


class NeuronpediaBatchesReader:
    """A folder of Neuronpedia ``batch-N.jsonl(.gz)`` files (or one holding
    ``explanations/``)."""

    name = NEURONPEDIA_BATCHES

    def sniff(self, path: Path) -> bool:
        return path.is_dir() and bool(batch_order(explanations_folder(path)))

    def read(self, path: Path, options: ReadOptions) -> ExplanationSource:
        return read_records(batch_order(explanations_folder(path)), path, self.name,
                            options.type_name)


class NeuronpediaJsonlReader:
    """A Neuronpedia JSON Lines file (a first line that is a JSON object)."""

    name = NEURONPEDIA_JSONL

    def sniff(self, path: Path) -> bool:
        return path.is_file() and first_line(path).startswith("{")

    def read(self, path: Path, options: ReadOptions) -> ExplanationSource:
        return read_records([path], path, self.name, options.type_name)


register_reader(NeuronpediaBatchesReader(), builtin=True)
register_reader(NeuronpediaJsonlReader(), builtin=True)
