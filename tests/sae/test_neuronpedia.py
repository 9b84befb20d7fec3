"""Neuronpedia export: JSONL that parses, Neuronpedia's field names, every field typed."""

from __future__ import annotations

import json
import math

import pytest

from saelens_tokenlabel import LabelSet

from .planted import DEAD_FEATURE, NEURONPEDIA_ID

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
