"""A user's own scorer and explanation format, written as a user would outside the package:
importing this module registers them (what ``tokenlabel ... --import tests.user_plugins``
does on the command line)."""

from __future__ import annotations

from pathlib import Path

from saelens_tokenlabel.formats.explanations import Keep, SourceInfo, register_reader
from saelens_tokenlabel.records.columns import ScoreColumn
from saelens_tokenlabel.sae.scorers import NoOptions, ScoreUpdate, register_scorer

SCORER = "label_chars"
READER = "user-csv"


class LabelChars:
    """The label's length in characters: trivially simple, so that its value is known."""

    name = SCORER
    config_type = NoOptions
    columns = (ScoreColumn("label_chars", "label length (chars)", neuronpedia=True),)
    labeled_only = True

    def score(self, subject, items, config):
        return [ScoreUpdate({"label_chars": float(len(i.result.label))}) for i in items]


class CsvReader:
    """``feature,explanation`` lines with a header, in a ``.csv`` file."""

    name = READER

    def sniff(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".csv"

    def read(self, path: Path, options):
        keep = Keep()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], 2):
            feature, _, text = line.partition(",")
            keep.add(int(feature), text, f"{path.name}:{n}")
        return keep.source(SourceInfo(self.name, str(path), 0))


register_scorer(LabelChars())
register_reader(CsvReader())
