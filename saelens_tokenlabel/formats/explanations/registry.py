"""The seam for explanation formats: the `ExplanationReader` protocol, a registry that refuses
duplicates, and `read_explanations`, which asks each reader in turn whether a path is its
format (`sniff`) and lets the first that says so `read` it.

The package registers four readers (`neuronpedia.py`: Neuronpedia JSON Lines and batch
folders; `delphi.py`; `tsv.py`). A user's own format is a class with the protocol's members,
registered once in their code::

    from saelens_tokenlabel.formats.explanations import Keep, SourceInfo, register_reader

    class CsvReader:
        name = "my-csv"
        def sniff(self, path): return path.suffix == ".csv"
        def read(self, path, options):
            keep = Keep()
            for n, line in enumerate(path.read_text().splitlines()[1:], 2):
                feature, text = line.split(",", 1)
                keep.add(int(feature), text, f"{path.name}:{n}")
            return keep.source(SourceInfo(self.name, str(path), 0))

    register_reader(CsvReader())

after which ``read_explanations("x.csv")``, ``LabelSet.compare(...)`` and ``tokenlabel compare
DIR --explanations x.csv --import mymodule`` read it. User readers are asked before the
built-in ones, so a format of one's own can claim files a built-in one would misread.
"""

from __future__ import annotations

import gzip
import importlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ...records.files import not_utf8
from ..jsonl import UNREADABLE, open_text
from .source import ExplanationSource, ExplanationSourceError

KINDS = ("a Neuronpedia export (.jsonl, .jsonl.gz, or its explanations/ folder of "
         "batch-N.jsonl.gz files), delphi's explanations/ folder (<module>_latent<N>.txt "
         "files), or a feature<TAB>explanation text file")
"""The built-in formats, as error messages name them."""
_BUILTIN_MODULES = (".neuronpedia", ".delphi", ".tsv")


@dataclass(frozen=True)
class ReadOptions:
    """What a caller may ask of a reader; each reader uses what applies to it."""

    type_name: str | None = None
    """Neuronpedia: keep explanations of this ``typeName`` only."""
    module: str | None = None
    """delphi: the module (hookpoint) whose latents to read."""


@runtime_checkable
class ExplanationReader(Protocol):
    """One explanation format (module docstring)."""

    @property
    def name(self) -> str:
        """Its registry name, recorded as `SourceInfo.format`."""
        ...

    def sniff(self, path: Path) -> bool:
        """Whether `path` (an existing file or folder) is in this format. Cheap: a name, a
        first line."""
        ...

    def read(self, path: Path, options: ReadOptions) -> ExplanationSource:
        """The explanations in `path`; an `ExplanationSourceError` (one line) when they
        cannot be read."""
        ...


_READERS: dict[str, ExplanationReader] = {}
_USER: list[str] = []
_loaded = False


def register_reader(reader: ExplanationReader, *, builtin: bool = False) -> ExplanationReader:
    """Make `reader` available under its name; a name already taken is an
    `ExplanationSourceError`. Returns the reader."""
    if not isinstance(reader, ExplanationReader):
        raise ExplanationSourceError(f"{type(reader).__name__} is not an explanation reader: "
                                     "it needs name, sniff(path) and read(path, options).")
    if not builtin:
        _load_builtins()
    if reader.name in _READERS:
        raise ExplanationSourceError(
            f"an explanation reader named {reader.name!r} is registered already "
            f"({type(_READERS[reader.name]).__qualname__}); give yours another name.")
    _READERS[reader.name] = reader
    if not builtin:
        _USER.append(reader.name)
    return reader


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module, __package__)


def readers() -> list[ExplanationReader]:
    """Every reader, in the order `read_explanations` asks them: users' first."""
    _load_builtins()
    first = [_READERS[n] for n in _USER]
    return first + [r for n, r in _READERS.items() if n not in _USER]


def read_explanations(path: str | Path, type_name: str | None = None,
                      module: str | None = None) -> ExplanationSource:
    """The explanations in `path`, read by the first reader whose `sniff` claims it.
    `type_name` keeps one Neuronpedia ``typeName``; `module` chooses a delphi folder's
    module."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--explanations {path}: no such file or folder; give "
                                f"{KINDS}.")
    for reader in readers():
        if reader.sniff(path):
            return reader.read(path, ReadOptions(type_name, module))
    yours = "; or register a reader for your format (formats.explanations.register_reader)"
    if path.is_dir():
        raise ExplanationSourceError(
            f"--explanations {path}: the folder holds neither Neuronpedia's batch-N.jsonl.gz "
            f"files nor delphi's <module>_latent<N>.txt files; give {KINDS}{yours}.")
    first_line(path)  # an unreadable or empty file says so
    raise ExplanationSourceError(
        f"--explanations {path}: its first line is neither a JSON object (Neuronpedia JSON "
        f"Lines) nor feature<TAB>explanation; give {KINDS}{yours}.")


def explanations_folder(path: Path) -> Path:
    """The folder a folder's explanations are in: its ``explanations/`` when it has one (a
    results folder), else itself."""
    return path / "explanations" if (path / "explanations").is_dir() else path


def first_line(path: Path) -> str:
    """A file's first non-empty line, stripped; one-line errors when it is unreadable (not
    UTF-8, a broken gzip) or empty."""
    try:
        with open_text(path) as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except UNREADABLE as err:  # gzip.BadGzipFile is an OSError
        raise unreadable(path, err) from None
    raise ExplanationSourceError(f"--explanations {path}: the file is empty.")


def unreadable(path: Path, err: BaseException) -> ExplanationSourceError:
    """The one line for a file that cannot be read to its end: not UTF-8 (which line: a
    decoder's own offset is into its read buffer), cut short or not gzip, or an error of the
    OS."""
    if isinstance(err, UnicodeDecodeError):
        opener = gzip.open if path.name.endswith(".gz") else open
        return ExplanationSourceError(
            f"--explanations {path}: cannot be read as UTF-8 text: {not_utf8(path, opener)}; "
            "save it as UTF-8 (or gzipped UTF-8).")
    what = (" the file is truncated or not gzip;" if isinstance(
        err, EOFError | zlib.error | gzip.BadGzipFile) else "")
    return ExplanationSourceError(
        f"--explanations {path}: cannot be read as UTF-8 text ({type(err).__name__}: "
        f"{' '.join(str(err).split())}):{what} give a whole file of {KINDS}.")
