"""Neuronpedia export: one explanation record per labeled feature, as JSON Lines.

Field names are Neuronpedia's (its `Explanation` and `ExplanationScore` tables)::

    {"id": "gpt2-small@8-res-jb@0@token_space_gd", "modelId": "gpt2-small",
     "layer": "8-res-jb", "index": "0", "description": "animal",
     "typeName": "token_space_gd", "explanationModelName": "<evaluator>",
     "notes": "<JSON string: probability, converged, steps, ...>",
     "scores": [{"explanationId": "<the id above>", "value": 0.93,
                 "explanationScoreTypeName": "token_space_gd_heldout_balanced_accuracy",
                 "explanationScoreModelName": "<evaluator>", "jsonDetails": "<JSON string>"}]}

``modelId`` and ``layer`` come from the SAE's ``cfg.metadata.neuronpedia_id``
(``"<modelId>/<layer>-<source>"``), recorded when the SAE was labeled, or from the explicit
argument when the SAE had none. Features without a label (dead, ...) get no record.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .names import METHOD

if TYPE_CHECKING:
    from .labelset import LabelSet

SCORE_METRICS = ("balanced_accuracy", "f1", "auroc", "accuracy")
_LAYER_RE = re.compile(r"^\d+-\S+$")


def parse_neuronpedia_id(neuronpedia_id: str) -> tuple[str, str]:
    """``"gpt2-small/8-res-jb"`` -> ``("gpt2-small", "8-res-jb")``."""
    model_id, sep, layer = str(neuronpedia_id).partition("/")
    if not sep or not model_id or not _LAYER_RE.match(layer):
        raise ValueError(
            f"neuronpedia_id {neuronpedia_id!r} is not '<modelId>/<layer>-<source>' (e.g. "
            "'gpt2-small/8-res-jb'). Pass the id Neuronpedia shows for this SAE."
        )
    return model_id, layer


def resolve_neuronpedia_id(labels: LabelSet, neuronpedia_id: str | None) -> str:
    recorded = labels.info.get("neuronpedia_id")
    if recorded and neuronpedia_id and recorded != neuronpedia_id:
        raise ValueError(
            f"The SAE's metadata says neuronpedia_id={recorded!r}, but {neuronpedia_id!r} was "
            "passed. Drop the argument, or relabel an SAE whose metadata has the id you want."
        )
    npid = recorded or neuronpedia_id
    if not npid:
        raise ValueError(
            "No Neuronpedia id: the SAE's cfg.metadata.neuronpedia_id was not set when it was "
            "labeled. Pass labels.to_neuronpedia(path, neuronpedia_id='<modelId>/<layer>-"
            "<source>') (CLI: --neuronpedia-id)."
        )
    return npid


def _scores(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    split = "heldout" if any(k.startswith("heldout_") for k in metrics) else "train"
    out = []
    for m in SCORE_METRICS:
        v = metrics.get(f"{split}_{m}")
        if isinstance(v, int | float) and math.isfinite(v):
            out.append((f"{split}_{m}", float(v)))
    return out


def explanation_records(labels: LabelSet, neuronpedia_id: str | None = None
                        ) -> list[dict[str, Any]]:
    model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels, neuronpedia_id))
    records = []
    for f in labels:
        r = labels[f]
        if r.status != "ok":
            continue
        evaluator = r.evaluator or str(labels.info.get("evaluator") or "unknown")
        exp_id = f"{model_id}@{layer}@{f}@{METHOD}"
        notes = {"probability": r.probability, "converged": r.converged, "steps": r.steps,
                 "label_tokens": r.label_tokens, "threshold_rule": r.threshold_rule,
                 "n_examples": r.n_examples, "n_active": r.n_active}
        details = {"n_examples": r.n_examples, "n_heldout": r.n_heldout,
                   "threshold_rule": r.threshold_rule}
        records.append({
            "id": exp_id,
            "modelId": model_id,
            "layer": layer,
            "index": str(f),
            "description": r.label,
            "typeName": METHOD,
            "explanationModelName": evaluator,
            "notes": json.dumps(notes, ensure_ascii=False),
            "scores": [
                {"explanationId": exp_id, "value": value,
                 "explanationScoreTypeName": f"{METHOD}_{name}",
                 "explanationScoreModelName": evaluator,
                 "jsonDetails": json.dumps(details, ensure_ascii=False)}
                for name, value in _scores(r.metrics)
            ],
        })
    return records


def write_neuronpedia(labels: LabelSet, path: str | Path,
                      neuronpedia_id: str | None = None) -> int:
    records = explanation_records(labels, neuronpedia_id)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return len(records)
