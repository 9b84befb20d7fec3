"""What an explanation reader gives: `Explanation`s by feature, as an `ExplanationSource`
with its `SourceInfo`, and the rule for several explanations of one feature (the first by
file order is kept, the others counted)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ...records.errors import ExplanationSourceError  # noqa: F401 - the readers import it here
from ...records.serial import Record

FIRST_BY_FILE_ORDER = "first by file order"
"""Which explanation of a feature is kept when a source has several."""


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
    """The reader's name (`explanations.readers`; ``dict``: a mapping given in Python)."""
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
        keep = Keep()
        for f, text in explanations.items():
            keep.add(int(f), str(text), f"{name}[{f}]")
        return keep.source(SourceInfo("dict", name, 0))


class Keep:
    """Collects explanations: the first of each feature wins, the rest are counted. A reader
    adds what it reads in file order, then makes its source with `source`."""

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
