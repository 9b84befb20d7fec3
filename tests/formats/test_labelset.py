"""LabelSet: a mapping feature -> LabelResult; metadata summary, sidecar file, and the round
trip through SAELens's save_model / load_from_disk."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from sae_lens import SAE

from saelens_tokenlabel import LabelResult, LabelSet
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.records.extra import ActivationStats, FeatureExtra
from saelens_tokenlabel.records.verdict import VERDICTS
from saelens_tokenlabel.sae import METADATA_KEY, SIDECAR_FILENAME

from ..sae.planted import DEAD_FEATURE, planted_sae


def test_labelset_is_a_mapping_of_feature_to_result(quick_labels):
    labels = quick_labels
    assert list(labels) == [0, 1, 2, 3] and len(labels) == 4
    assert all(isinstance(labels[f], LabelResult) and labels[f].feature == f for f in labels)
    assert 0 in labels and 7 not in labels
    with pytest.raises(KeyError, match="feature 7 was not labeled"):
        labels[7]
    dead = labels[DEAD_FEATURE]
    assert dead.status == "dead" and "never fires" in dead.extra.message
    assert labels.by_status() == {"ok": [0, 1, 3], "dead": [2]}
    assert set(labels.labels) == {0, 1, 3}
    # The full results keep the words mapping and the examples.
    r = labels[0]
    assert r.extra.words and all(w.subject_ids and w.word for w in r.extra.words)
    assert {e.kind for e in r.extra.examples} == {"top", "quantile", "near_miss", "random"}
    assert r.extra.activation.n_active_tokens > 0


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
    assert summary["labels"]["2"] == {"label": None, "score": None, "status": "dead",
                                      "verdict": "dead"}
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


SIDECAR_V1 = Path(__file__).parent / "data" / "sidecar_v1.json"
"""A sidecar as version 0.1.0 wrote it (plain-dict `extra`): a labeled feature with words,
examples, output side and coherence settings, a dead one with a message."""


def test_a_sidecar_of_the_plain_dict_layout_round_trips_unchanged():
    raw = json.loads(SIDECAR_V1.read_text(encoding="utf-8"))
    labels = LabelSet.from_dict(raw)
    r, dead = labels[0], labels[DEAD_FEATURE]
    assert isinstance(r.extra, FeatureExtra) and not r.extra.other
    assert r.extra.examples[0].kind == "top" and r.extra.words[0].subject_ids
    assert r.extra.output_side.promoted[0].token == raw["results"][0]["extra"][
        "output_side"]["promoted"][0][0]
    assert r.extra.merged_words == sum(w.merged for w in r.extra.words)
    assert dead.extra.message.startswith("Feature 2 never fires") and dead.extra.words is None
    # Read, each result gets a verdict derived from its metrics; the summary shows it, the
    # results themselves are written back as they were.
    assert r.verdict.derived and dead.verdict.value == "dead"
    again = labels.to_dict()
    again["summary"]["version"] = raw["summary"]["version"]  # the package version writing it
    assert {e.pop("verdict") for e in again["summary"]["labels"].values()} <= set(VERDICTS)
    assert json.dumps(again, ensure_ascii=False) == json.dumps(raw, ensure_ascii=False)


def test_partial_and_unknown_extra_entries_survive_a_round_trip():
    raw = json.loads(SIDECAR_V1.read_text(encoding="utf-8"))
    extras = [{}, {"message": "m"}, {"activation": {"max": 1.0, "n_active_tokens": 2,
                                                     "frequency": 0.5}, "future": [1, {"a": 2}]},
              {"examples": "not a list", "output_side": [1, 2]}]
    raw["results"] = [{**raw["results"][0], "feature": i, "extra": e}
                      for i, e in enumerate(extras)]
    labels = LabelSet.from_dict(json.loads(json.dumps(raw)))
    assert [labels[i].extra.to_dict() for i in range(len(extras))] == extras
    assert labels[2].extra.other == {"future": [1, {"a": 2}]}
    assert labels[3].extra.examples is None and set(labels[3].extra.other) == {
        "examples", "output_side"}
    assert not labels[0].extra and labels[1].extra


def test_add_keeps_int_keys_without_changing_the_result_given():
    r = LabelResult.from_dict({**json.loads(SIDECAR_V1.read_text())["results"][0],
                               "feature": "5"})
    labels = LabelSet([r])
    assert list(labels) == [5] and labels[5].feature == 5 and r.feature == "5"
    with pytest.raises(ValueError, match="feature indices"):
        LabelSet([dataclasses.replace(r, feature="f")])


def test_status_result_carries_the_message_beside_what_is_known():
    stats = ActivationStats(max=0.0, n_active_tokens=0, frequency=0.0)
    r = status_result(4, "dead", "never fires", FeatureExtra(activation=stats), evaluator="e")
    assert r.extra.message == "never fires" and r.extra.activation == stats
    assert list(r.extra.to_dict()) == ["message", "activation"] and r.evaluator == "e"
    assert status_result(4, "dead", "x").extra.to_dict() == {"message": "x"}


def test_a_garbled_label_file_is_one_line_naming_it(quick_labels, tmp_path, capsys):
    from saelens_tokenlabel.cli import main
    from saelens_tokenlabel.records.errors import RecordError

    path = quick_labels.save(tmp_path / "labels.json")
    path.write_text(path.read_text(encoding="utf-8")[:500], encoding="utf-8")  # cut short
    with pytest.raises(RecordError) as err:
        LabelSet.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} is not a readable label file (") and "\n" not in msg
    assert "tokenlabel export" in msg
    assert main(["report", str(path), "--no-plots"]) == 2
    assert capsys.readouterr().err == f"tokenlabel: error: {msg}\n"
def test_asking_after_a_feature_not_labeled_costs_no_pass_over_the_labels(monkeypatch):
    """A run asks after every feature still to label (`f in labels`): were each miss to go
    over every label (as the message of a failed lookup does), a run would be quadratic."""
    from saelens_tokenlabel.formats import labelset as module
    from saelens_tokenlabel.records.result import Trajectory

    labels = LabelSet([LabelResult(label="a", label_tokens=["a"], label_token_ids=[1],
                                   probability=1.0, converged=True, steps=1, metrics={},
                                   trajectory=Trajectory(), feature=f) for f in range(5_000)])
    spans = []
    monkeypatch.setattr(module, "_span", lambda fs: spans.append(len(fs)) or "")
    assert sum(f in labels for f in range(10_000)) == 5_000
    assert "7" in labels and 7.0 in labels and "x" not in labels and None not in labels
    assert spans == []
    with pytest.raises(KeyError):
        labels[10_001]
    assert spans == [5_000]  # the message of an explicit lookup still names the labels
