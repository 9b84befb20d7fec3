"""What a scorer adds to a result, as readers of results see it: `ScoreColumn`.

A scorer (`sae.scorers`) writes metrics into `LabelResult.metrics`; its columns say what each
means, how the report shows it and whether the Neuronpedia export writes it as an
ExplanationScore. A run records the columns of the scorers it ran in its info
(``info["scorers"]``), so the report and the exports show a user's own scorer without
importing it; results written before that record fall back to the built-in scorers' columns.

Layer 1: no torch, nothing above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .serial import Record

SCORERS_INFO_KEY = "scorers"
"""The key of a run's info that lists the scorers it ran and their columns."""


@dataclass(frozen=True)
class ScoreColumn(Record):
    """One metric a scorer writes (``LabelResult.metrics[key]``)."""

    key: str
    """The metric's key in `LabelResult.metrics`."""
    title: str
    """Its column title in the report."""
    neuronpedia: bool = False
    """Write it as an ExplanationScore in the Neuronpedia export
    (``token_space_gd_<key>``)."""
    scored_by: str = "subject"
    """Which model scores it: ``"subject"`` (the SAE's model) or ``"evaluator"``."""
    details: tuple[str, ...] = ()
    """Other metric keys written into the ExplanationScore's ``jsonDetails`` (their scorer's
    prefix removed)."""
    details_config: str | None = None
    """A `FeatureExtra` field whose value goes into ``jsonDetails["config"]`` (the settings the
    score was measured with)."""


OUTPUT_SIDE_COLUMNS = (
    ScoreColumn("output_label_rank", "label rank (output side)"),
)
COHERENCE_COLUMNS = (
    ScoreColumn("coherence_ratio", "coherence ratio", neuronpedia=True,
                details=("coherence_activation", "coherence_neutral",
                         "coherence_neutral_hit_rate"), details_config="coherence_config"),
    ScoreColumn("coherence_hit_rate", "coherence hit rate", neuronpedia=True,
                details=("coherence_activation", "coherence_neutral",
                         "coherence_neutral_hit_rate"), details_config="coherence_config"),
)
STEERING_COLUMNS = (
    ScoreColumn("steering_score", "steering score", neuronpedia=True,
                details=("steering_gain", "steering_random_gain")),
)
BUILTIN_SCORERS: dict[str, tuple[ScoreColumn, ...]] = {
    "output_side": OUTPUT_SIDE_COLUMNS,
    "coherence": COHERENCE_COLUMNS,
    "steering": STEERING_COLUMNS,
}
"""The columns of the scorers the package ships, by scorer name."""


COUNT_METRICS = frozenset({"attempts", "steps_total", "train_errors", "train_error_words",
                           "train_fixable_errors"})
"""Metrics that count things (the optimisation's attempts and steps, training errors): shown
and exported as integers. ``attempts`` is the optimisation's (`LabelResult.attempts`); the
run store's count of processes that started a feature is its ``retries``."""


def as_count(key: str, value: Any) -> Any:
    """`value` as an int when `key` is a count (`COUNT_METRICS`) and it is a whole number;
    anything else as it is."""
    if (key in COUNT_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and float(value).is_integer()):
        return int(value)
    return value


def scorer_entry(name: str, columns: tuple[ScoreColumn, ...]) -> dict[str, Any]:
    """A scorer as a run's info records it."""
    return {"name": name, "columns": [c.to_dict() for c in columns]}


def score_columns(info: Mapping[str, Any]) -> list[ScoreColumn]:
    """The columns of the built-in scorers and of those a run recorded in its info (a user's
    own), each key once: the built-in ones are known to every reader even when the run's
    info does not list them (results scored afterwards, or written before info did)."""
    out = {c.key: c for cols in BUILTIN_SCORERS.values() for c in cols}
    entries = info.get(SCORERS_INFO_KEY)
    for entry in entries if isinstance(entries, list) else []:
        for c in entry.get("columns", []) if isinstance(entry, dict) else []:
            column = ScoreColumn.from_dict(c)
            out.setdefault(column.key, column)
    return list(out.values())
