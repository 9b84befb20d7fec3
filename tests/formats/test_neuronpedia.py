"""Neuronpedia export: JSONL that parses, Neuronpedia's field names, every field typed; the
import layout (explanations/ and explanation_scores/ batch-N.jsonl.gz) read back as
Neuronpedia's importer reads it."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
from datetime import UTC, datetime

import pytest

from saelens_tokenlabel import LabelSet
from saelens_tokenlabel.formats.neuronpedia import (
    DETECTION_METRICS,
    NEURONPEDIA_AUTHOR_ID,
    NeuronpediaBatchConfig,
)
from saelens_tokenlabel.records.result import LabelResult
from saelens_tokenlabel.records.serial import ConfigError
from saelens_tokenlabel.sae.scorers.apply import ScoreConfig, add_sae_scores
from saelens_tokenlabel.sae.scorers.coherence import CoherenceConfig
from saelens_tokenlabel.sae.subject import Subject

from ..sae.planted import DEAD_FEATURE, MODEL_NAME, NEURONPEDIA_ID, planted_sae

EXPLANATION_FIELDS = {"id": str, "modelId": str, "layer": str, "index": str,
                      "description": str, "typeName": str, "explanationModelName": str,
                      "notes": str, "scores": list}
SCORE_FIELDS = {"explanationId": str, "value": float, "explanationScoreTypeName": str,
                "explanationScoreModelName": str, "jsonDetails": str}
# Column -> (Prisma type, optional) of `model Explanation` and `model ExplanationScore` in
# apps/webapp/prisma/schema.prisma of github.com/hijohnnylin/neuronpedia (relations are no
# columns). Written out here from the schema, not imported from the module under test.
EXPLANATION_SCHEMA = {
    "id": ("String", False), "modelId": ("String", False), "layer": ("String", False),
    "index": ("String", False), "embedding": ("vector(256)", True),
    "description": ("String", False), "authorId": ("String", False),
    "triggeredByUserId": ("String", True), "notes": ("String", True),
    "scoreV1": ("Float", False), "scoreV2": ("Float", True), "umap_x": ("Float", True),
    "umap_y": ("Float", True), "umap_cluster": ("Int", True),
    "umap_log_feature_sparsity": ("Float", True), "typeName": ("String", True),
    "explanationModelName": ("String", True), "createdAt": ("DateTime", False),
    "updatedAt": ("DateTime", False)}
EXPLANATION_SCORE_SCHEMA = {
    "id": ("String", False), "initiatedByUserId": ("String", False), "value": ("Float", False),
    "explanationId": ("String", False), "explanationScoreTypeName": ("String", False),
    "explanationScoreModelName": ("String", False), "jsonDetails": ("String", False),
    "createdAt": ("DateTime", False)}
# zod's .cuid() check, which the webapp's generated schemas put on both ids.
CUID = re.compile(r"^c[^\s-]{8,}$", re.IGNORECASE)
T0 = datetime(2025, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)


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
    assert all(CUID.match(r["id"]) and len(r["id"]) == 25 for r in records)


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


@pytest.fixture(scope="module")
def scored_labels(quick_labels, subject):
    """`quick_labels` with coherence and steering scores added (the fixture stays as it is)."""
    labels = LabelSet([LabelResult.from_dict(json.loads(json.dumps(quick_labels[f].to_dict())))
                       for f in quick_labels], quick_labels.info)
    return LabelSet(add_sae_scores(list(labels.values()), Subject.of(subject, planted_sae()),
                                   config=ScoreConfig(options={"coherence": CoherenceConfig(
                                       count="prompt")})), labels.info)


def test_coherence_and_steering_scores_go_out_as_score_records(quick_labels, scored_labels,
                                                               tmp_path):
    """Scored by the subject model (whose SAE activations they measure), not the evaluator;
    the output side's top tokens go into the notes."""
    labels = scored_labels
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


# ---------------------------------------------------------------- the import layout


def _rows(path):
    """A batch file's rows, read as Neuronpedia's importer reads one: gunzip, split lines."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    return [json.loads(line) for line in text.strip().split("\n") if line.strip()]


def _import_like_neuronpedia(folder):
    """Explanations, then scores, as apps/webapp/app/api/admin/import/route.ts and
    lib/db/import.ts do: every *.jsonl.gz of the folder, lines in order; the column list is
    the first line's keys (so every line must have them all), and a row whose id is already
    in the table is skipped (ON CONFLICT DO NOTHING). A score must point at an explanation
    read before it (the foreign key)."""
    explanations, scores = {}, {}
    for path in sorted((folder / "explanations").glob("*.jsonl.gz")):
        rows = _rows(path)
        assert rows and all(list(r) == list(rows[0]) for r in rows), path
        for row in rows:
            explanations.setdefault(row["id"], row)
    for path in sorted((folder / "explanation_scores").glob("*.jsonl.gz")):
        rows = _rows(path)
        assert rows and all(list(r) == list(rows[0]) for r in rows), path
        for row in rows:
            assert row["explanationId"] in explanations, (path, row)
            scores.setdefault(row["id"], row)
    return explanations, scores


def _has_type(value, prisma_type, optional):
    if value is None:
        return optional
    if prisma_type == "String":
        return type(value) is str
    if prisma_type == "Float":
        return type(value) is float and math.isfinite(value)
    if prisma_type == "Int":
        return type(value) is int
    if prisma_type == "DateTime":  # ISO 8601, as batch-autointerp.py's isoformat()
        return type(value) is str and datetime.fromisoformat(value).tzinfo is not None
    if prisma_type == "vector(256)":
        return type(value) is list and len(value) == 256
    raise AssertionError(prisma_type)


def _check_schema(row, schema):
    assert list(row) == list(schema)  # exactly the columns, in the schema's order
    for key, (prisma_type, optional) in schema.items():
        assert _has_type(row[key], prisma_type, optional), (key, row[key])


def _many(labels, n):
    """`n` labeled features made of the fixture's real results (and its dead feature)."""
    ok = [labels[f] for f in labels if labels[f].status == "ok"]
    dead = [labels[f] for f in labels if labels[f].status != "ok"]
    out = [dataclasses.replace(ok[i % len(ok)], feature=100 + i,
                               label=f"{ok[i % len(ok)].label}{i}") for i in range(n)]
    return LabelSet(out + dead, labels.info)


def test_batches_have_the_schema_columns_and_types(scored_labels, tmp_path):
    folder = tmp_path / "gpt2" / "0-res"
    done = scored_labels.to_neuronpedia_batches(folder, created_at=T0)
    assert [p.relative_to(folder).as_posix() for p in done.explanation_files] == [
        "explanations/batch-0.jsonl.gz"]
    assert [p.relative_to(folder).as_posix() for p in done.score_files] == [
        "explanation_scores/batch-0.jsonl.gz"]
    explanations, scores = _import_like_neuronpedia(folder)
    assert done.explanations == len(explanations) == len(scored_labels.labels)
    assert done.scores == len(scores) > 0
    model_id, layer = NEURONPEDIA_ID.split("/")
    for row in explanations.values():
        _check_schema(row, EXPLANATION_SCHEMA)
        f = int(row["index"])
        assert (row["modelId"], row["layer"], row["description"]) == (
            model_id, layer, scored_labels[f].label)
        assert CUID.match(row["id"]) and row["authorId"] == NEURONPEDIA_AUTHOR_ID
        assert row["scoreV1"] == 0.0 and row["embedding"] is None and row["umap_x"] is None
        assert row["createdAt"] == row["updatedAt"] == "2025-03-01T12:30:15.250+00:00"
        json.loads(row["notes"])
    for row in scores.values():
        _check_schema(row, EXPLANATION_SCORE_SCHEMA)
        assert CUID.match(row["id"]) and row["initiatedByUserId"] == NEURONPEDIA_AUTHOR_ID
        json.loads(row["jsonDetails"])
    types = {r["explanationScoreTypeName"] for r in scores.values()}
    assert {"token_space_gd_heldout_balanced_accuracy", "token_space_gd_coherence_ratio"} <= types


def test_readable_view_and_batches_are_the_same_rows(scored_labels, tmp_path):
    """neuronpedia.jsonl is the batches' rows without the bookkeeping columns."""
    scored_labels.to_neuronpedia(tmp_path / "np.jsonl")
    scored_labels.to_neuronpedia_batches(tmp_path / "src")
    explanations, scores = _import_like_neuronpedia(tmp_path / "src")
    for rec in _read(tmp_path / "np.jsonl"):
        row = explanations[rec["id"]]
        assert {k: row[k] for k in rec if k != "scores"} == {
            k: v for k, v in rec.items() if k != "scores"}
        mine = sorted((s for s in scores.values() if s["explanationId"] == rec["id"]),
                      key=lambda s: s["explanationScoreTypeName"])
        assert [{k: s[k] for k in SCORE_FIELDS} for s in mine] == sorted(
            rec["scores"], key=lambda s: s["explanationScoreTypeName"])


def test_batches_split_by_records_per_file_with_scores_beside(quick_labels, tmp_path):
    labels = _many(quick_labels, 5)
    done = labels.to_neuronpedia_batches(
        tmp_path, config=NeuronpediaBatchConfig(records_per_file=2, author_id="u1"))
    assert [p.name for p in done.explanation_files] == [
        "batch-0.jsonl.gz", "batch-1.jsonl.gz", "batch-2.jsonl.gz"]
    assert [p.name for p in done.score_files] == [p.name for p in done.explanation_files]
    assert [len(_rows(p)) for p in done.explanation_files] == [2, 2, 1]
    for exp_file, score_file in zip(done.explanation_files, done.score_files, strict=True):
        ids = {r["id"] for r in _rows(exp_file)}
        assert {s["explanationId"] for s in _rows(score_file)} == ids  # scores beside them
    explanations, _ = _import_like_neuronpedia(tmp_path)
    assert sorted(int(r["index"]) for r in explanations.values()) == list(range(100, 105))
    assert {r["authorId"] for r in explanations.values()} == {"u1"}
    with pytest.raises(ConfigError, match="records_per_file"):
        NeuronpediaBatchConfig(records_per_file=0)
    with pytest.raises(ConfigError, match="author_id"):
        NeuronpediaBatchConfig(author_id=" ")


def test_a_re_export_replaces_its_own_files_byte_for_byte(quick_labels, tmp_path):
    labels, cfg = _many(quick_labels, 5), NeuronpediaBatchConfig(records_per_file=2)
    first = labels.to_neuronpedia_batches(tmp_path, config=cfg, created_at=T0)
    before = {p: p.read_bytes() for p in first.explanation_files + first.score_files}
    again = labels.to_neuronpedia_batches(tmp_path, config=cfg, created_at=T0)
    assert again.explanation_files == first.explanation_files and again.removed == []
    assert {p: p.read_bytes() for p in before} == before  # same labels, same bytes
    # More labels per file: fewer files; the earlier export's extra ones go.
    fewer = labels.to_neuronpedia_batches(tmp_path, config=NeuronpediaBatchConfig(),
                                          created_at=T0)
    assert [p.name for p in fewer.explanation_files] == ["batch-0.jsonl.gz"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in fewer.removed) == [
        "explanation_scores/batch-1.jsonl.gz", "explanation_scores/batch-2.jsonl.gz",
        "explanations/batch-1.jsonl.gz", "explanations/batch-2.jsonl.gz"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "batch-0.jsonl.gz", "batch-0.jsonl.gz"]
    explanations, _ = _import_like_neuronpedia(tmp_path)
    assert len(explanations) == 5  # nothing twice, nothing lost


def test_other_batch_files_are_kept_and_numbered_after(quick_labels, tmp_path):
    """batch-autointerp.py's files (and another SAE's export) in the folder are not ours to
    replace: the export numbers after them, as batch-autointerp.py numbers after existing
    files."""
    (tmp_path / "explanations").mkdir()
    theirs = {"id": "cxxxxxxxxxxxxxxxxxxxxxxxx", "modelId": "gpt2-small",
              "layer": NEURONPEDIA_ID.split("/")[1], "index": "0", "description": "dogs",
              "authorId": NEURONPEDIA_AUTHOR_ID, "typeName": "oai_token-act-pair",
              "explanationModelName": "gpt-4.1-nano", "createdAt": T0.isoformat()}
    gz = tmp_path / "explanations" / "batch-0.jsonl.gz"
    gz.write_bytes(gzip.compress((json.dumps(theirs) + "\n").encode()))
    plain = tmp_path / "explanations" / "batch-1.jsonl"  # not gzipped (yet)
    plain.write_text(json.dumps(theirs) + "\n")
    other_sae = LabelSet(list(quick_labels.values()), {**quick_labels.info,
                                                      "neuronpedia_id": "gpt2-small/9-res-jb"})
    assert [p.name for p in other_sae.to_neuronpedia_batches(tmp_path).explanation_files] == [
        "batch-2.jsonl.gz"]
    kept = (gz.read_bytes(), plain.read_bytes())
    labels = _many(quick_labels, 3)
    for _ in range(2):  # the second time replaces the first, still after the others
        done = labels.to_neuronpedia_batches(tmp_path,
                                             config=NeuronpediaBatchConfig(records_per_file=2))
        assert [p.name for p in done.explanation_files] == ["batch-3.jsonl.gz",
                                                            "batch-4.jsonl.gz"]
    assert (gz.read_bytes(), plain.read_bytes()) == kept
    assert (tmp_path / "explanations" / "batch-2.jsonl.gz").is_file()


def test_a_failed_export_leaves_whole_files(quick_labels, tmp_path, monkeypatch):
    labels, cfg = _many(quick_labels, 4), NeuronpediaBatchConfig(records_per_file=2)
    first = labels.to_neuronpedia_batches(tmp_path, config=cfg, created_at=T0)
    old = first.explanation_files[1].read_bytes()
    relabeled = LabelSet([dataclasses.replace(r, label=r.label + "!") if r.status == "ok"
                          else r for r in labels.values()], labels.info)
    real_write = gzip.GzipFile.write

    def write(self, data):  # the disk fills up while explanations/batch-1 is written
        name = str(self.fileobj.name)
        if "explanations" in name and "batch-1.jsonl.gz" in name:
            raise OSError("No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(gzip.GzipFile, "write", write)
    with pytest.raises(OSError, match="No space"):
        relabeled.to_neuronpedia_batches(tmp_path, config=cfg, created_at=T0)
    monkeypatch.undo()
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert first.explanation_files[1].read_bytes() == old  # not half a file
    explanations, _ = _import_like_neuronpedia(tmp_path)  # every file whole
    assert {r["description"].endswith("!") for r in explanations.values()} == {True, False}
    again = relabeled.to_neuronpedia_batches(tmp_path, config=cfg, created_at=T0)
    assert again.explanations == 4
    explanations, _ = _import_like_neuronpedia(tmp_path)
    assert all(r["description"].endswith("!") for r in explanations.values())


def test_no_neuronpedia_id_writes_no_batches(quick_labels, tmp_path):
    bare = LabelSet(list(quick_labels.values()), {**quick_labels.info, "neuronpedia_id": None})
    with pytest.raises(ValueError, match="neuronpedia_id="):
        bare.to_neuronpedia_batches(tmp_path / "src")
    assert not (tmp_path / "src").exists()
    done = bare.to_neuronpedia_batches(tmp_path / "src", neuronpedia_id="gpt2-small/8-res-jb")
    assert done.explanations == len(quick_labels.labels)
