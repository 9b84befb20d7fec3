"""The corpus the subject model reads: a list of strings, a text or JSONL file, or a Hugging
Face dataset, always streamed one document at a time.

`Corpus.fingerprint()` identifies the content, so that the activation cache and a run folder
are reused exactly when the documents are the same: a hash of the documents read (strings, a
text or JSONL file), of a local dataset folder's file bytes, or a remote dataset's name,
config, split and revision. A file's path, size and times never decide it: touching, copying
or moving a corpus changes nothing, and editing one document changes the hash
(`identity.py` hashes and remembers, and words a difference).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..records.errors import CorpusError
from ..records.files import not_utf8
from .identity import DocumentDigest, digest_documents, digest_file_bytes, explain_difference

Kind = Literal["texts", "text_file", "jsonl", "hf"]
_FILE_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class Corpus:
    """Where documents come from. Build it with `Corpus.of(...)` or the classmethods."""

    kind: Kind
    """`texts` (in memory), `text_file` (one document per non-empty line), `jsonl` (one JSON
    object per line) or `hf` (`datasets.load_dataset(..., streaming=True)`)."""
    source: str | tuple[str, ...]
    """The strings, the file path, or the dataset name (or local dataset folder)."""
    text_field: str = "text"
    """Field holding the document text (JSONL and datasets)."""
    split: str = "train"
    """Dataset split."""
    config_name: str | None = None
    """Dataset configuration (`load_dataset(name, config_name)`)."""
    revision: str | None = None
    """Dataset revision, part of the cache key."""
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments for `datasets.load_dataset`."""

    # ------------------------------------------------------------------ constructors
    @classmethod
    def of(cls, corpus: Corpus | Sequence[str] | str | Path, text_field: str = "text",
           split: str = "train") -> Corpus:
        """A list of strings; a path to a ``.txt``/``.jsonl`` file; a local dataset folder or a
        Hugging Face dataset name (``hf:`` forces the latter)."""
        if isinstance(corpus, Corpus):
            return corpus
        if isinstance(corpus, Path) or isinstance(corpus, str):
            return cls._from_name(str(corpus), text_field, split)
        if isinstance(corpus, Sequence):
            return cls.texts(corpus)
        raise CorpusError(
            f"A corpus must be a list of strings, a file path or a dataset name; got "
            f"{type(corpus).__name__}. Pass list(your_iterable) to label from an iterable "
            "(the cache needs to identify the content)."
        )

    @classmethod
    def texts(cls, texts: Sequence[str]) -> Corpus:
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise CorpusError(
                f"Corpus document {bad[0]} is a {type(texts[bad[0]]).__name__}, not a str. "
                "Pass a list of strings."
            )
        if not texts:
            raise CorpusError("The corpus is empty. Pass at least one document.")
        if not any(t.strip() for t in texts):
            # What a text file of blank lines gives too (its reader skips them).
            raise CorpusError(f"The corpus has no tokens: all {len(texts)} documents are empty "
                              "or whitespace only. Pass at least one document with text.")
        return cls("texts", tuple(texts))

    @classmethod
    def _from_name(cls, name: str, text_field: str, split: str) -> Corpus:
        if name.startswith("hf:"):
            return cls("hf", name[3:], text_field=text_field, split=split)
        path = Path(name).expanduser()
        if path.is_file():
            kind: Kind = "jsonl" if path.suffix in (".jsonl", ".json", ".ndjson") else \
                "text_file"
            return cls(kind, str(path.resolve()), text_field=text_field)
        if path.is_dir():
            # A local folder of data files: `load_dataset` reads it offline.
            return cls("hf", str(path.resolve()), text_field=text_field, split=split)
        if path.suffix in _FILE_SUFFIXES:
            raise CorpusError(f"Corpus file {name!r} does not exist. Check the path.")
        return cls("hf", name, text_field=text_field, split=split)

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[str]:
        if self.kind == "texts":
            yield from self.source
        elif self.kind == "text_file":
            yield from self._lines()
        elif self.kind == "jsonl":
            yield from self._jsonl()
        else:
            yield from self._hf()

    def _field(self, record: Any, where: str) -> str:
        if not isinstance(record, dict) or self.text_field not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise CorpusError(
                f"{where} has no field {self.text_field!r} (it has {keys}). Pass "
                "text_field='<the field with the text>' (CLI: --text-field)."
            )
        text = record[self.text_field]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: field {self.text_field!r} is a "
                              f"{type(text).__name__}, not a str.")
        return text

    def _lines(self) -> Iterator[str]:
        """A text file's non-blank lines, each a document."""
        with self._open() as f:
            for line in _utf8(f, self.source):
                line = line.rstrip("\n")
                if line.strip():
                    yield line

    def _jsonl(self) -> Iterator[str]:
        with self._open() as f:
            for n, line in enumerate(_utf8(f, self.source), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusError(f"{self.source}, line {n}: not JSON ({err}). A JSONL "
                                      "corpus needs one JSON object per line.") from None
                yield self._field(record, f"{self.source}, line {n}")

    def _open(self) -> Any:
        try:
            return open(str(self.source), encoding="utf-8")
        except OSError as err:
            raise CorpusError(f"Corpus file {self.source} cannot be read ({err.strerror}). "
                              "Check the path and its permissions.") from None

    def _hf(self) -> Iterator[str]:
        try:
            # Optional (the `datasets` extra): only a corpus read by dataset name needs it.
            import datasets
        except ImportError:
            raise CorpusError(f"Reading the dataset {self.source!r} needs the `datasets` "
                              "package: pip install 'saelens-tokenlabel[datasets]'") from None
        ds = datasets.load_dataset(self.source, self.config_name, split=self.split,
                                   streaming=True, revision=self.revision, **self.load_kwargs)
        for n, record in enumerate(ds):
            yield self._field(record, f"dataset {self.source!r} record {n}")

    # ------------------------------------------------------------------ identity
    def describe(self) -> str:
        if self.kind == "texts":
            return f"{len(self.source)} in-memory texts"
        if self.kind == "hf":
            cfg = f" ({self.config_name})" if self.config_name else ""
            return f"dataset {self.source}{cfg}, split {self.split}"
        return f"{self.kind} {self.source}"

    def documents_digest(self, memo: Path | None = None) -> DocumentDigest | None:
        """The hash of the documents read (strings, text and JSONL files; None for a
        dataset), remembered in `memo` (a folder) for a file that has not changed since."""
        if self.kind == "hf":
            return None
        path = None if self.kind == "texts" else Path(str(self.source))
        return digest_documents(iter(self), path, memo, self.text_field)

    def fingerprint(self, memo: Path | None = None) -> dict[str, Any]:
        """What identifies the content, for the cache key and a run's identity (module
        docstring); `memo` is where file hashes are remembered (`identity.py`)."""
        docs = self.documents_digest(memo)
        if docs is not None:
            # The same documents from a list, a .txt or a .jsonl file give the same activations.
            return {"kind": "documents", "n": docs.n, "sha": docs.sha}
        out: dict[str, Any] = {"kind": "hf", "name": self.source, "config": self.config_name,
               "split": self.split, "revision": self.revision, "text_field": self.text_field,
               "load_kwargs": {k: repr(v) for k, v in sorted(self.load_kwargs.items())}}
        path = Path(str(self.source))
        if path.is_dir():
            # A local dataset folder: its files' bytes (not where it lies) stand for the content.
            out["name"] = "local folder"
            out["files"] = sorted(
                (str(p.relative_to(path)), p.stat().st_size, digest_file_bytes(p, memo))
                for p in path.rglob("*") if p.is_file()
            )
        return out

    def path_fingerprint(self) -> dict[str, Any] | None:
        """The identity earlier versions gave a file (its path, size and modification time) or
        a list of strings, before identity by content: a run folder they started, on a file
        untouched since, still resumes (`run.record.open_record` rebinds it). None for a
        dataset, whose identity has not changed."""
        if self.kind == "texts":
            docs = self.documents_digest()
            return None if docs is None else {"kind": "texts", "n": docs.n, "sha": docs.sha}
        if self.kind == "hf":
            return None
        st = Path(str(self.source)).stat()
        return {"kind": self.kind, "path": self.source, "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "text_field": self.text_field}

    def profile(self, memo: Path | None = None) -> dict[str, Any]:
        """What a run records of its corpus, so that a later mismatch can be said in words
        (`difference`): where it was, its size, its documents and their hash."""
        docs = self.documents_digest(memo)
        out: dict[str, Any] = {"corpus": self.describe()}
        if docs is not None:
            out.update(n_documents=docs.n, sha=docs.sha, size=docs.size)
        return out

    def difference(self, before: dict[str, Any] | None, memo: Path | None = None) -> str:
        """How this corpus differs from the one `before` (a `profile`) describes, in words:
        the files, their sizes and document counts, and the first differing document."""
        return explain_difference(self.profile(memo), before, self._documents_now, memo)

    def _documents_now(self) -> Iterator[str]:
        return iter(self)


def _utf8(lines: Iterator[str], path: str | tuple[str, ...]) -> Iterator[str]:
    """`lines` of a file opened as UTF-8; a byte that is not is a `CorpusError` naming the
    line (`files.not_utf8`)."""
    try:
        yield from lines
    except UnicodeDecodeError:
        raise CorpusError(f"Corpus file {path}: {not_utf8(str(path))}. Save it as UTF-8 (e.g. "
                          "iconv -f latin1 -t utf-8 FILE > FILE.utf8, with its real "
                          "encoding).") from None
