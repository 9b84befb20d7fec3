"""Neuronpedia export: one explanation record per labeled feature, as JSON Lines.

Field names are Neuronpedia's, as its database schema defines them (``model Explanation`` and
``model ExplanationScore`` in ``apps/webapp/prisma/schema.prisma`` of
github.com/hijohnnylin/neuronpedia): an explanation has ``modelId``, ``layer``, ``index``,
``description``, ``typeName``, ``explanationModelName``, ``notes`` and its ``scores``; a
score has ``value`` (Float), ``explanationId``, ``explanationScoreTypeName``,
``explanationScoreModelName`` and ``jsonDetails`` (a JSON *string*). The server sets the rest
(``id`` of a score, ``initiatedByUserId``, ``createdAt``). Neuronpedia's own dataset exports
nest the scores inside each explanation the same way, and its scorers name the score type
after the method (``eleuther_fuzz``, ``eleuther_recall``, ``recall_alt``) and the score model
after the model that produced the score; so do these records::

    {"id": "gpt2-small@8-res-jb@0@token_space_gd", "modelId": "gpt2-small",
     "layer": "8-res-jb", "index": "0", "description": "animal",
     "typeName": "token_space_gd", "explanationModelName": "<evaluator>",
     "notes": "<JSON string: probability, converged, steps, ...>",
     "scores": [{"explanationId": "<the id above>", "value": 0.93,
                 "explanationScoreTypeName": "token_space_gd_heldout_balanced_accuracy",
                 "explanationScoreModelName": "<evaluator>", "jsonDetails": "<JSON string>"}]}

Score records, for every finite value in the result's metrics:

* detection (`DETECTION_METRICS`, compare delphi's detection scorer):
  ``token_space_gd_<split>_<metric>`` with ``<split>`` ``heldout`` (else ``train`` when
  nothing was held out), scored by the evaluator (``explanationScoreModelName`` = evaluator);
* reflective coherence (`COHERENCE_METRICS`): ``token_space_gd_coherence_ratio`` and
  ``token_space_gd_coherence_hit_rate``, scored by the *subject* model whose SAE activations
  they measure (``explanationScoreModelName`` = the subject model's name); ``jsonDetails``
  holds the label and neutral activations and the coherence settings;
* steering (`STEERING_METRICS`): ``token_space_gd_steering_score``, the label's
  log-probability gain (nats) when the decoder direction is added to the subject model, minus
  a random direction's (`sae.steering`), scored by the subject model; ``jsonDetails`` holds
  both gains.

The output side (tokens the decoder direction promotes) is no score; its top tokens go into
``notes``.

``modelId`` and ``layer`` come from the SAE's ``cfg.metadata.neuronpedia_id``
(``"<modelId>/<layer>-<source>"``), recorded when the SAE was labeled, or from the explicit
argument when the SAE had none. Features without a label (dead, ...) get no record.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from .files import atomic_write_lines
from .names import METHOD
from .result import LabelResult


class Labels(Protocol):
    """What an export reads: feature index -> result, and the run's info (a `LabelSet`)."""

    info: dict[str, Any]

    def __iter__(self) -> Iterator[int]: ...

    def __getitem__(self, feature: int) -> LabelResult: ...

DETECTION_METRICS = ("balanced_accuracy", "f1", "auroc", "accuracy", "precision", "recall")
COHERENCE_METRICS = ("coherence_ratio", "coherence_hit_rate")
STEERING_METRICS = ("steering_score",)
_STEERING_DETAILS = ("steering_gain", "steering_random_gain")
_COHERENCE_DETAILS = ("coherence_activation", "coherence_neutral", "coherence_neutral_hit_rate")
NOTES_OUTPUT_TOKENS = 10
"""Promoted tokens of the output side written into ``notes``."""
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


def resolve_neuronpedia_id(labels: Labels, neuronpedia_id: str | None) -> str:
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


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _scores(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """Detection scores: (``<split>_<metric>``, value) of the held-out split if any."""
    split = "heldout" if any(k.startswith("heldout_") for k in metrics) else "train"
    out = []
    for m in DETECTION_METRICS:
        v = metrics.get(f"{split}_{m}")
        if _finite(v):
            out.append((f"{split}_{m}", float(v)))
    return out


def _coherence_scores(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    return [(m, float(metrics[m])) for m in COHERENCE_METRICS if _finite(metrics.get(m))]


def _score(exp_id: str, name: str, value: float, model: str, details: dict[str, Any]
           ) -> dict[str, Any]:
    return {"explanationId": exp_id, "value": value,
            "explanationScoreTypeName": f"{METHOD}_{name}",
            "explanationScoreModelName": model,
            "jsonDetails": json.dumps(details, ensure_ascii=False, allow_nan=False)}


def explanation_records(labels: Labels, neuronpedia_id: str | None = None
                        ) -> list[dict[str, Any]]:
    model_id, layer = parse_neuronpedia_id(resolve_neuronpedia_id(labels, neuronpedia_id))
    records = []
    for f in labels:
        r = labels[f]
        if r.status != "ok":
            continue
        evaluator = r.evaluator or str(labels.info.get("evaluator") or "unknown")
        subject = str(labels.info.get("model_name") or "unknown")
        exp_id = f"{model_id}@{layer}@{f}@{METHOD}"
        notes = {"probability": r.probability, "converged": r.converged, "steps": r.steps,
                 "label_tokens": r.label_tokens, "threshold_rule": r.threshold_rule,
                 "n_examples": r.n_examples, "n_active": r.n_active}
        if r.polysemantic is not None:
            # One label does not explain the feature: say so beside the label.
            notes["polysemantic"] = r.polysemantic.to_dict()
        side = r.extra.output_side
        if side is not None:
            notes["output_promoted"] = [p.token for p in side.promoted[:NOTES_OUTPUT_TOKENS]]
            notes["output_label_rank"] = r.metrics.get("output_label_rank")
        details = {"n_examples": r.n_examples, "n_heldout": r.n_heldout,
                   "threshold_rule": r.threshold_rule}
        scores = [_score(exp_id, name, value, evaluator, details)
                  for name, value in _scores(r.metrics)]
        coherence = _coherence_scores(r.metrics)
        if coherence:
            cdetails = {k.removeprefix("coherence_"): r.metrics.get(k)
                        for k in _COHERENCE_DETAILS if _finite(r.metrics.get(k))}
            cdetails["config"] = r.extra.coherence_config
            scores += [_score(exp_id, name, value, subject, cdetails)
                       for name, value in coherence]
        if _finite(r.metrics.get("steering_score")):
            # What the latent does to the label when steering: measured on the subject model.
            sdetails = {k.removeprefix("steering_"): r.metrics[k] for k in _STEERING_DETAILS
                        if _finite(r.metrics.get(k))}
            scores += [_score(exp_id, m, float(r.metrics[m]), subject, sdetails)
                       for m in STEERING_METRICS]
        records.append({
            "id": exp_id,
            "modelId": model_id,
            "layer": layer,
            "index": str(f),
            "description": r.label,
            "typeName": METHOD,
            "explanationModelName": evaluator,
            "notes": json.dumps(notes, ensure_ascii=False),
            "scores": scores,
        })
    return records


def write_neuronpedia(labels: Labels, path: str | Path,
                      neuronpedia_id: str | None = None) -> int:
    records = explanation_records(labels, neuronpedia_id)
    atomic_write_lines(path, (json.dumps(rec, ensure_ascii=False, allow_nan=False)
                              for rec in records))
    return len(records)
