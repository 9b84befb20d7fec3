"""Existing explanations of SAE features, read from the files other tools write: one reader
per format, each registered by name (`registry`; a user's own registers the same way), and
`read_explanations`, which finds the reader a path is for.

The built-in formats: Neuronpedia's exports, JSON Lines or a folder of batch files
(`neuronpedia`); delphi's ``explanations/`` folder (`delphi`); ``feature<TAB>explanation``
text (`tsv`). Several explanations of one feature: the **first by file order** is kept (files
in batch order, or by name for delphi; lines in order) and the others are counted; empty ones
are skipped and counted (`source`). Anything else is an `ExplanationSourceError`: one line
naming the problem and the fix. Part of `formats/`: plain Python.
"""

from .delphi import DELPHI
from .neuronpedia import NEURONPEDIA_BATCHES, NEURONPEDIA_JSONL
from .registry import ExplanationReader, ReadOptions, read_explanations, readers, register_reader
from .source import (
    FIRST_BY_FILE_ORDER,
    Explanation,
    ExplanationSource,
    ExplanationSourceError,
    Keep,
    SourceInfo,
)
from .tsv import TSV

FORMATS = (NEURONPEDIA_JSONL, NEURONPEDIA_BATCHES, DELPHI, TSV)
"""The formats the package reads itself (`readers` lists those registered since, too)."""

__all__ = [
    "DELPHI",
    "FIRST_BY_FILE_ORDER",
    "FORMATS",
    "NEURONPEDIA_BATCHES",
    "NEURONPEDIA_JSONL",
    "TSV",
    "Explanation",
    "ExplanationReader",
    "ExplanationSource",
    "ExplanationSourceError",
    "Keep",
    "ReadOptions",
    "SourceInfo",
    "read_explanations",
    "readers",
    "register_reader",
]
