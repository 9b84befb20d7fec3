"""Existing explanations of SAE features, read from the files other tools write.

Layer 1 (results and configs): plain Python, imports nothing heavy.

`read_explanations(path)` detects the format:

* **Neuronpedia** explanation exports: JSON Lines, plain (``.jsonl``) or gzipped
  (``.jsonl.gz``), one explanation per line with ``index`` (the feature, a string) and
  ``description``; or a folder of ``batch-N.jsonl.gz`` (or ``.jsonl``) files, the layout of
  Neuronpedia's dataset exports (``.../<model>/<source>/explanations/batch-0.jsonl.gz``). An
  export often holds several explanations of one feature (one per explainer, ``typeName`` and
  ``explanationModelName``): ``type_name`` keeps one type only.
* **delphi** (EleutherAI): its ``explanations/`` folder, one file per latent named
  ``<module>_latent<N>.txt`` (``f"{record.latent}.txt"`` in ``delphi/__main__.py``, where a
  ``Latent`` prints as ``f"{module_name}_latent{latent_index}"`` and the module is the
  hookpoint, e.g. ``layers.5.mlp``), holding the explanation as a JSON string (written with
  ``orjson.dumps(result.explanation)``, read back with ``json.loads``). One folder can hold
  several modules' latents: ``module`` chooses one.
* **plain text**: ``feature<TAB>explanation`` lines; a first line whose feature is not a
  number is a header; empty lines are skipped.

A folder holding an ``explanations/`` folder (a delphi run's results folder) is read from it.
Several explanations of one feature: the **first by file order** is kept (files in batch
order, or by name for delphi; lines in order) and the others are counted in `duplicates`.
Explanations are stripped of surrounding whitespace; empty ones are skipped and counted.
Anything else is an `ExplanationSourceError`: one line naming the problem and the fix.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records.errors import ExplanationSourceError
from ..records.files import not_utf8
from ..records.serial import Record

NEURONPEDIA_JSONL = "neuronpedia-jsonl"
NEURONPEDIA_BATCHES = "neuronpedia-batches"
DELPHI = "delphi"
TSV = "tsv"
FORMATS = (NEURONPEDIA_JSONL, NEURONPEDIA_BATCHES, DELPHI, TSV)
"""The formats `read_explanations` detects."""
FIRST_BY_FILE_ORDER = "first by file order"
"""Which explanation of a feature is kept when a source has several."""
_BATCH_RE = re.compile(r"^batch-(\d+)\.jsonl(\.gz)?$")
_DELPHI_RE = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)\.txt$")
_KINDS = ("a Neuronpedia export (.jsonl, .jsonl.gz, or its explanations/ folder of "
          "batch-N.jsonl.gz files), delphi's explanations/ folder (<module>_latent<N>.txt "
          "files), or a feature<TAB>explanation text file")


@dataclass(frozen=True)
class Explanation(Record):
    """One existing explanation of a feature."""

    feature: int
    """The feature (latent) index."""
    text: str
    """The explanation, surrounding whitespace stripped."""
    where: str
    """Where it was read: ``file:line``, or the file of a one-file-per-feature layout."""
    type_name: str | None = None
    """Neuronpedia's ``typeName`` (the explanation method), when the source says."""
    model: str | None = None
    """Neuronpedia's ``explanationModelName`` (the explainer LLM), when the source says."""


@dataclass(frozen=True)
class SourceInfo(Record):
    """What was read, and how: kept with a comparison (without the explanations)."""

    format: str
    """One of `FORMATS` (``dict``: a mapping given in Python, `ExplanationSource.of`)."""
    path: str
    """The file or folder given."""
    n_explanations: int
    """Features with an explanation, after filtering and choosing among duplicates."""
    duplicates: int = 0
    """Explanations dropped because an earlier one (`rule`) explained the same feature."""
    skipped: int = 0
    """Explanations left out: empty text, another ``typeName`` or another delphi module."""
    rule: str = FIRST_BY_FILE_ORDER
    """Which explanation of a feature is kept when there are several."""
    type_name: str | None = None
    """The Neuronpedia ``typeName`` kept (None: every type)."""
    module: str | None = None
    """The delphi module read (None: not a delphi folder)."""
    neuronpedia_ids: tuple[str, ...] = ()
    """The ``modelId/layer`` pairs a Neuronpedia export names (its SAE)."""


@dataclass(frozen=True)
class ExplanationSource:
    """Explanations by feature, and where they came from."""

    info: SourceInfo
    """The source's format, path and counts."""
    explanations: dict[int, Explanation] = field(default_factory=dict)
    """feature -> the explanation kept for it."""

    def __len__(self) -> int:
        return len(self.explanations)

    @classmethod
    def of(cls, explanations: dict[int, str], name: str = "<dict>") -> ExplanationSource:
        """A source from a plain mapping ``feature -> text`` (Python callers)."""
        keep = _Keep()
        for f, text in explanations.items():
            keep.add(int(f), str(text), f"{name}[{f}]")
        return keep.source(SourceInfo("dict", name, 0))


class _Keep:
    """Collects explanations: the first of each feature wins, the rest are counted."""

    def __init__(self) -> None:
        self.kept: dict[int, Explanation] = {}
        self.duplicates = 0
        self.skipped = 0

    def add(self, feature: int, text: str, where: str, type_name: str | None = None,
            model: str | None = None) -> None:
        text = text.strip()
        if not text:
            self.skipped += 1
        elif feature in self.kept:
            self.duplicates += 1
        else:
            self.kept[feature] = Explanation(feature, text, where, type_name, model)

    def source(self, info: SourceInfo) -> ExplanationSource:
        kept = dict(sorted(self.kept.items()))
        return ExplanationSource(
            dataclasses.replace(info, n_explanations=len(kept), duplicates=self.duplicates,
                                skipped=self.skipped + info.skipped), kept)


def read_explanations(path: str | Path, type_name: str | None = None,
                      module: str | None = None) -> ExplanationSource:
    """The explanations in `path` (format detected, module docstring). `type_name` keeps one
    Neuronpedia ``typeName``; `module` chooses a delphi folder's module."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--explanations {path}: no such file or folder; give "
                                f"{_KINDS}.")
    if path.is_dir():
        folder = path / "explanations" if (path / "explanations").is_dir() else path
        batches = _batch_files(folder)
        if batches:
            return _neuronpedia(batches, path, NEURONPEDIA_BATCHES, type_name)
        if any(_DELPHI_RE.match(p.name) for p in folder.iterdir()):
            return _delphi(folder, path, module)
        raise ExplanationSourceError(
            f"--explanations {path}: the folder holds neither Neuronpedia's batch-N.jsonl.gz "
            f"files nor delphi's <module>_latent<N>.txt files; give {_KINDS}.")
    first = _first_line(path)
    if first.startswith("{"):
        return _neuronpedia([path], path, NEURONPEDIA_JSONL, type_name)
    if "\t" in first:
        return _tsv(path)
    raise ExplanationSourceError(
        f"--explanations {path}: its first line is neither a JSON object (Neuronpedia JSON "
        f"Lines) nor feature<TAB>explanation; give {_KINDS}.")


def _open_text(path: Path) -> Any:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _first_line(path: Path) -> str:
    try:
        with _open_text(path) as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None
    raise ExplanationSourceError(f"--explanations {path}: the file is empty.")


def _unreadable(path: Path, err: BaseException) -> ExplanationSourceError:
    """The one line for a file that cannot be read to its end: not UTF-8 (which line), cut
    short or not gzip, or an error of the OS."""
    if isinstance(err, UnicodeDecodeError):
        opener = gzip.open if path.name.endswith(".gz") else open
        return ExplanationSourceError(
            f"--explanations {path}: cannot be read as UTF-8 text: {not_utf8(path, opener)}; "
            "save it as UTF-8 (or gzipped UTF-8).")
    what = (" the file is truncated or not gzip;" if isinstance(
        err, EOFError | zlib.error | gzip.BadGzipFile) else "")
    return ExplanationSourceError(
        f"--explanations {path}: cannot be read as UTF-8 text ({type(err).__name__}: "
        f"{' '.join(str(err).split())}):{what} give a whole file of {_KINDS}.")


def _batch_files(folder: Path) -> list[Path]:
    """Neuronpedia's ``batch-N.jsonl(.gz)`` files in batch order (N as a number)."""
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_file() and (m := _BATCH_RE.match(p.name))]
    return [p for _, p in sorted(found)]


_UNREADABLE = (OSError, EOFError, UnicodeDecodeError, zlib.error)
"""What a corrupt, truncated or non-UTF-8 (gzipped) file raises while being read."""


def _json_lines(files: Iterable[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each non-empty line of `files` as (``file:line``, its JSON object)."""
    for path in files:
        try:
            yield from _lines_of(path)
        except _UNREADABLE as err:
            raise _unreadable(path, err) from None


def _lines_of(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path) as fh:
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


def _neuronpedia(files: list[Path], given: Path, fmt: str, type_name: str | None
                 ) -> ExplanationSource:
    keep, ids, other_types = _Keep(), set(), 0
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


def _delphi(folder: Path, given: Path, module: str | None) -> ExplanationSource:
    files: dict[str, list[tuple[int, Path]]] = {}
    for p in sorted(folder.iterdir()):
        m = _DELPHI_RE.match(p.name)
        if m and p.is_file():
            files.setdefault(m.group("module"), []).append((int(m.group("index")), p))
    if module is None and len(files) > 1:
        raise ExplanationSourceError(
            f"--explanations {given}: delphi explanations of several modules "
            f"({', '.join(sorted(files))}); choose one with --module.")
    module = module if module is not None else next(iter(files))
    if module not in files:
        raise ExplanationSourceError(
            f"--explanations {given}: no delphi explanations of module {module!r} (it holds "
            f"{', '.join(sorted(files))}); pass one of those to --module.")
    keep = _Keep()
    for index, p in files[module]:
        keep.add(index, _delphi_text(p), p.name)
    skipped = sum(len(v) for k, v in files.items() if k != module)
    return keep.source(SourceInfo(DELPHI, str(given), 0, skipped=skipped, module=module))


def _delphi_text(path: Path) -> str:
    """A delphi explanation file's content: one JSON string."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        value = None
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None
    if not isinstance(value, str):
        raise ExplanationSourceError(
            f"{path}: not a JSON string; delphi writes each explanation as one (e.g. "
            "\"Mentions of animals\"). Quote the text, or give a feature<TAB>text file.")
    return value


def _tsv(path: Path) -> ExplanationSource:
    try:
        return _tsv_lines(path)
    except _UNREADABLE as err:
        raise _unreadable(path, err) from None


def _tsv_lines(path: Path) -> ExplanationSource:
    keep = _Keep()
    first = True
    with _open_text(path) as fh:
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
                    f"{path}:{n}: expected feature<TAB>explanation with the feature a number, "
                    f"got {line[:60]!r}.")
            keep.add(int(feature), text, f"{path.name}:{n}")
    return keep.source(SourceInfo(TSV, str(path), 0))
