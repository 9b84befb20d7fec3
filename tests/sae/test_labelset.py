"""LabelSet: a mapping feature -> LabelResult; metadata summary, sidecar file, and the round
trip through SAELens's save_model / load_from_disk."""

from __future__ import annotations

import json
import math

import pytest
from sae_lens import SAE

from saelens_tokenlabel import LabelResult, LabelSet
from saelens_tokenlabel.sae import METADATA_KEY, SIDECAR_FILENAME

from .planted import DEAD_FEATURE, planted_sae


def test_labelset_is_a_mapping_of_feature_to_result(quick_labels):
    labels = quick_labels
    assert list(labels) == [0, 1, 2, 3] and len(labels) == 4
    assert all(isinstance(labels[f], LabelResult) and labels[f].feature == f for f in labels)
    assert 0 in labels and 7 not in labels
    with pytest.raises(KeyError, match="feature 7 was not labeled"):
        labels[7]
    dead = labels[DEAD_FEATURE]
    assert dead.status == "dead" and "never fires" in dead.extra["message"]
    assert labels.by_status() == {"ok": [0, 1, 3], "dead": [2]}
    assert set(labels.labels) == {0, 1, 3}
    # The full results keep the words mapping and the examples.
    r = labels[0]
    assert r.extra["words"] and all({"subject_ids", "word", "merged"} <= set(w)
                                    for w in r.extra["words"])
    assert {e["kind"] for e in r.extra["examples"]} == {"top", "quantile", "near_miss",
                                                         "random"}
    assert r.extra["activation"]["n_active_tokens"] > 0


def test_save_and_load(quick_labels, tmp_path):
    path = quick_labels.save(tmp_path / "labels.json")
    back = LabelSet.load(path)
    assert back.to_dict() == quick_labels.to_dict()
    # A folder gets the sidecar file name; loading from the folder finds it.
    quick_labels.save(tmp_path / "dir")
    assert (tmp_path / "dir" / SIDECAR_FILENAME).is_file()
    assert LabelSet.load(tmp_path / "dir").to_dict() == quick_labels.to_dict()
    with pytest.raises(FileNotFoundError, match="labels.save"):
        LabelSet.load(tmp_path / "nowhere")


def test_non_finite_values_are_saved_as_null(quick_labels, tmp_path):
    labels = LabelSet(list(quick_labels.values()), quick_labels.info)
    labels[0].metrics["loss"] = float("nan")
    try:
        back = LabelSet.load(labels.save(tmp_path / "l.json"))
        assert back[0].metrics["loss"] is None
    finally:
        labels[0].metrics["loss"] = quick_labels[0].metrics["loss"] = 0.0


def test_attach_puts_a_compact_summary_into_metadata(quick_labels):
    sae = planted_sae()
    quick_labels.attach(sae)
    summary = sae.cfg.metadata[METADATA_KEY]
    assert summary["method"] == "token_space_gd" and summary["version"]
    assert summary["evaluator"] == quick_labels[0].evaluator
    assert summary["sidecar"] == SIDECAR_FILENAME
    for f in (0, 1, 3):
        entry = summary["labels"][str(f)]
        assert entry["label"] == quick_labels[f].label and entry["status"] == "ok"
        assert 0.0 <= entry["score"] <= 1.0
    assert summary["labels"]["2"] == {"label": None, "score": None, "status": "dead"}
    json.dumps(summary)  # plain JSON: it goes into cfg.json
    assert "trajectory" not in json.dumps(summary)  # compact: full results are in the sidecar


def test_labels_survive_save_model_and_load_from_disk(quick_labels, tmp_path):
    sae = planted_sae()
    quick_labels.attach(sae)
    sae.save_model(tmp_path / "sae")
    assert (tmp_path / "sae" / SIDECAR_FILENAME).is_file()
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["metadata"][METADATA_KEY] == sae.cfg.metadata[METADATA_KEY]

    loaded = SAE.load_from_disk(tmp_path / "sae")
    assert loaded.cfg.metadata[METADATA_KEY] == sae.cfg.metadata[METADATA_KEY]
    assert LabelSet.from_sae(loaded).to_dict() == quick_labels.to_dict()
    assert LabelSet.load(tmp_path / "sae").to_dict() == quick_labels.to_dict()
    # Saving the loaded SAE again carries the full results along.
    loaded.save_model(tmp_path / "again")
    assert LabelSet.load(tmp_path / "again").to_dict() == quick_labels.to_dict()
    assert LabelSet.from_sae(SAE.load_from_disk(tmp_path / "again"))[0].label == \
        quick_labels[0].label
    with pytest.raises(LookupError, match="no labels attached"):
        LabelSet.from_sae(planted_sae())


def test_attach_refuses_labels_of_another_sae(quick_labels):
    from sae_lens import StandardSAE, StandardSAEConfig

    with pytest.raises(ValueError, match="out of range"):
        quick_labels.attach(StandardSAE(StandardSAEConfig(d_in=32, d_sae=2)))
    with pytest.raises(ValueError, match="made for an SAE at"):
        quick_labels.attach(planted_sae(hook="blocks.1.hook_resid_pre"))


def test_summary_score_is_heldout_balanced_accuracy(quick_labels):
    r = quick_labels[0]
    want = r.metrics.get("heldout_balanced_accuracy")
    got = quick_labels.summary()["labels"]["0"]["score"]
    assert want is not None and math.isclose(got, want)
