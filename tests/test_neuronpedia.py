"""Neuronpedia export: JSONL that parses, Neuronpedia's field names, every field typed."""

from __future__ import annotations

import json
import math

import pytest

from saelens_tokenlabel import LabelSet
from saelens_tokenlabel.neuronpedia import DETECTION_METRICS
from saelens_tokenlabel.result import LabelResult
from saelens_tokenlabel.sae.coherence import CoherenceConfig
from saelens_tokenlabel.sae.scoring import ScoreConfig, add_sae_scores

from .sae.planted import DEAD_FEATURE, MODEL_NAME, NEURONPEDIA_ID, planted_sae

EXPLANATION_FIELDS = {"id": str, "modelId": str, "layer": str, "index": str,
                      "description": str, "typeName": str, "explanationModelName": str,
                      "notes": str, "scores": list}
SCORE_FIELDS = {"explanationId": str, "value": float, "explanationScoreTypeName": str,
                "explanationScoreModelName": str, "jsonDetails": str}


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_parses_with_typed_neuronpedia_fields(quick_labels, tmp_path):
    path = tmp_path / "np.jsonl"
    n = quick_labels.to_neuronpedia(path)
    records = _read(path)
    assert n == len(records) == len(quick_labels.labels)  # dead features get no record
    model_id, layer = NEURONPEDIA_ID.split("/")
    for rec in records:
        assert set(rec) == set(EXPLANATION_FIELDS)
        for key, typ in EXPLANATION_FIELDS.items():
            assert type(rec[key]) is typ, (key, rec[key])
        assert rec["modelId"] == model_id and rec["layer"] == layer
        assert rec["layer"].split("-")[0].isdigit()  # "<layer>-<source>"
        f = int(rec["index"])
        assert f != DEAD_FEATURE and rec["description"] == quick_labels[f].label
        assert rec["typeName"] == "token_space_gd"
        assert rec["explanationModelName"] == quick_labels[f].evaluator
        assert json.loads(rec["notes"])["probability"] == quick_labels[f].probability
        assert rec["scores"]
        for score in rec["scores"]:
            assert set(score) == set(SCORE_FIELDS)
            for key, typ in SCORE_FIELDS.items():
                assert type(score[key]) is typ, (key, score[key])
            assert score["explanationId"] == rec["id"] and math.isfinite(score["value"])
            assert score["explanationScoreTypeName"].startswith("token_space_gd_heldout_")
            assert score["explanationScoreModelName"] == rec["explanationModelName"]
            json.loads(score["jsonDetails"])
        # Every finite detection score of the hard label, precision and recall included.
        want = {f"token_space_gd_heldout_{m}" for m in DETECTION_METRICS
                if isinstance(quick_labels[f].metrics.get(f"heldout_{m}"), float)}
        assert {s["explanationScoreTypeName"] for s in rec["scores"]} == want
        assert "token_space_gd_heldout_precision" in want
        ba = next(s["value"] for s in rec["scores"]
                  if s["explanationScoreTypeName"].endswith("balanced_accuracy"))
        assert ba == quick_labels[f].metrics["heldout_balanced_accuracy"]
    assert len({r["id"] for r in records}) == len(records)


def test_neuronpedia_id_from_metadata_else_argument(quick_labels, tmp_path):
    bare = LabelSet(list(quick_labels.values()), {**quick_labels.info, "neuronpedia_id": None})
    with pytest.raises(ValueError, match="neuronpedia_id="):
        bare.to_neuronpedia(tmp_path / "a.jsonl")
    assert not (tmp_path / "a.jsonl").exists()
    bare.to_neuronpedia(tmp_path / "b.jsonl", neuronpedia_id="gpt2-small/8-res-jb")
    rec = _read(tmp_path / "b.jsonl")[0]
    assert (rec["modelId"], rec["layer"]) == ("gpt2-small", "8-res-jb")
    with pytest.raises(ValueError, match="was passed"):
        quick_labels.to_neuronpedia(tmp_path / "c.jsonl", neuronpedia_id="gpt2-small/8-res-jb")
    quick_labels.to_neuronpedia(tmp_path / "d.jsonl", neuronpedia_id=NEURONPEDIA_ID)
    with pytest.raises(ValueError, match="<layer>-<source>"):
        bare.to_neuronpedia(tmp_path / "e.jsonl", neuronpedia_id="gpt2-small-8")


def test_coherence_and_steering_scores_go_out_as_score_records(quick_labels, subject,
                                                               tmp_path):
    """Scored by the subject model (whose SAE activations they measure), not the evaluator;
    the output side's top tokens go into the notes."""
    labels = LabelSet([LabelResult.from_dict(json.loads(json.dumps(quick_labels[f].to_dict())))
                       for f in quick_labels], quick_labels.info)  # the fixture stays as it is
    labels = LabelSet(add_sae_scores(list(labels.values()), planted_sae(), subject,
                                     config=ScoreConfig(coherence_config=CoherenceConfig(
                                         count="prompt"))), labels.info)
    labels.to_neuronpedia(tmp_path / "np.jsonl")
    records = _read(tmp_path / "np.jsonl")
    assert len(records) == len(quick_labels.labels)
    for rec in records:
        r = labels[int(rec["index"])]
        by_type = {s["explanationScoreTypeName"]: s for s in rec["scores"]}
        for name in ("coherence_ratio", "coherence_hit_rate"):
            score = by_type[f"token_space_gd_{name}"]
            assert set(score) == set(SCORE_FIELDS)
            assert type(score["value"]) is float and score["value"] == r.metrics[name]
            assert score["explanationScoreModelName"] == MODEL_NAME
            assert score["explanationId"] == rec["id"]
            details = json.loads(score["jsonDetails"])
            assert details["neutral"] == r.metrics["coherence_neutral"]
            assert details["config"]["count"] == "prompt"
        steer = by_type.get("token_space_gd_steering_score")
        if "steering_score" in r.metrics:  # None where the subject cannot say the label
            assert steer["value"] == r.metrics["steering_score"]
            assert steer["explanationScoreModelName"] == MODEL_NAME
            assert json.loads(steer["jsonDetails"])["gain"] == r.metrics["steering_gain"]
        else:
            assert steer is None
        assert by_type["token_space_gd_heldout_balanced_accuracy"][
            "explanationScoreModelName"] == rec["explanationModelName"]
        notes = json.loads(rec["notes"])
        assert notes["output_promoted"] == [t for t, _ in r.extra.output_side.promoted]
