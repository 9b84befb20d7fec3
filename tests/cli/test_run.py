"""`tokenlabel status DIR` and `tokenlabel export DIR` on a run's store."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from datetime import UTC, datetime

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.run import RunStore, load_labelset
from saelens_tokenlabel.run.export import has_pyarrow
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import SIDECAR_FILENAME, CacheConfig, ExampleConfig, LabelSet

from ..sae.planted import DEAD_FEATURE, NEURONPEDIA_ID, planted_sae


@pytest.fixture(scope="module")
def run_dir(subject, toy_corpus, fast_evaluator, tmp_path_factory):
    """A finished run of features 0, 1, 2 (dead), plus 5 that failed once and 6 never
    started."""
    out = tmp_path_factory.mktemp("run")
    label_sae_features(planted_sae(), subject, fast_evaluator, toy_corpus[:60],
                       [0, 1, DEAD_FEATURE], LabelConfig(steps=2, batch_size=6),
                       cache=CacheConfig(cache_dir=out / "cache"),
                       examples=ExampleConfig(n_top=4, n_quantile=4, n_random=4,
                                              n_near_miss=4), run_dir=out)
    with RunStore(out) as store:
        store.add_features([5, 6])
        store.start([5])
        store.fail([5], "OutOfMemoryError: CUDA out of memory (simulated)")
    return out


def test_status_counts_attempts_errors_and_last(run_dir, capsys):
    assert main(["status", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "3/5 finished" in out and "ok=2" in out and "dead=1" in out
    assert "error=1" in out and "pending=1" in out
    assert "CUDA out of memory (simulated)" in out and "retries these" in out
    assert "features/min" in out and "blocks.0.hook_resid_pre" in out
    assert main(["status", str(run_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["counts"] == {"ok": 2, "dead": 1, "error": 1, "pending": 1}
    assert s["retries"]["starts"] == 4 and [e["feature"] for e in s["errors"]] == [5]
    assert {r["feature"] for r in s["last"]} == {0, 1, DEAD_FEATURE}
    assert s["claimed"] == 0 and "claimed:" not in out
    # Every finished feature's verdict, counted, and shown beside each recent label.
    labels = load_labelset(run_dir)
    assert s["verdicts"] == {k: len(v) for k, v in labels.by_verdict().items()}
    assert "verdicts:" in out and f"dead={s['verdicts']['dead']}" in out
    assert {r["feature"]: r["verdict"] for r in s["last"]} == {
        f: labels[f].verdict.value for f in labels}


def test_status_shows_who_is_labeling_what(run_dir, tmp_path, capsys):
    """Another process's live claims show in `tokenlabel status`; expired ones do not."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
    with RunStore(copy) as store:
        assert store.claim([5, 6], 2, "host:123:abc", lease_s=60.0) == [5, 6]
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "claimed:      2 features being labeled (last heartbeat 0 s ago)" in out
    assert "\n  host:123:abc  5, 6\n" in out
    with RunStore(copy) as store:
        store.release("host:123:abc")
        assert store.claim([6], 1, "host:9:x", lease_s=-1.0) == [6]  # already expired
    assert main(["status", str(copy)]) == 0
    assert "claimed:" not in capsys.readouterr().out


def _copy_run(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
    return copy


def test_status_mid_batch_times_the_run_and_lists_the_claims(run_dir, tmp_path, capsys):
    """Fourteen minutes into a batch of four (one dead, done at once; three being labeled
    under a live claim): status says 14 minutes, not 0, and who labels what; a `running` row
    no live claim holds (its process stopped) is `interrupted`, never `running`."""
    import time

    copy = _copy_run(run_dir, tmp_path)
    now = time.time()
    with RunStore(copy) as store:
        store._db.execute("DELETE FROM features")
        store.add_features(range(6))
        store.start([0, 1, 2, 3])
        store.put([status_result(0, "dead", "never fires")])
        assert store.claim([1, 2, 3], 3, "host:42:abc", lease_s=600.0) == [1, 2, 3]
        store.start([4])  # a process that stopped: running, no claim
        store._db.execute("UPDATE features SET started_at = ? WHERE feature IN (0, 1, 2, 3)",
                          (now - 840,))
        store._db.execute("UPDATE features SET finished_at = ? WHERE feature = 0",
                          (now - 839.99,))
        store._db.execute("UPDATE features SET started_at = ? WHERE feature = 4",
                          (now - 900,))
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "1/6 finished  dead=1  running=3  interrupted=1  pending=1" in out
    assert "claimed:      3 features being labeled" in out
    assert "\n  host:42:abc  1, 2, 3\n" in out
    assert "interrupted:  1 features whose process stopped before their results (4)" in out
    # 14 minutes of labeling: the batch's start to now (feature 4's stopped process counts
    # only up to its last sign of life, here its start).
    assert "elapsed:      14m00s labeling" in out
    assert "0.1 features/min, about 1h10m00s left" in out  # 5 left at 1 per 14 minutes
    assert main(["status", str(copy), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["claims"] == {"host:42:abc": [1, 2, 3]} and s["interrupted"] == [4]
    assert s["elapsed_s"] == pytest.approx(840, abs=5)


def test_status_into_a_closed_pipe_exits_quietly(run_dir, monkeypatch):
    """`tokenlabel status DIR | head`: the reader is gone before status prints; no
    BrokenPipeError, exit 0."""
    import os
    import sys

    read, write = os.pipe()
    os.close(read)
    pipe = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", pipe)
    try:
        assert main(["status", str(run_dir)]) == 0
    finally:
        monkeypatch.undo()
        pipe.close()  # what was left unprinted goes to /dev/null now: no error


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_sidecar_neuronpedia_and_table(run_dir, tmp_path, fmt, capsys):
    if fmt == "parquet" and not has_pyarrow():
        pytest.skip("pyarrow is not installed")
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--to", str(out), "--format", fmt]) == 0
    printed = capsys.readouterr().out
    labels = LabelSet.load(out / SIDECAR_FILENAME)
    assert list(labels) == [0, 1, DEAD_FEATURE]
    assert labels.info["hook_name"] == "blocks.0.hook_resid_pre"
    records = [json.loads(x) for x in (out / "neuronpedia.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == ["0", "1"]
    assert all(f"{r['modelId']}/{r['layer']}" == NEURONPEDIA_ID for r in records)
    assert "2 explanation records" in printed
    if fmt == "csv":
        with (out / "labels.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        conv = {"True": True, "False": False, "": None}
        rows = [{**r, "feature": int(r["feature"]),
                 "converged": conv[r["converged"]], "label": r["label"] or None,
                 "heldout_balanced_accuracy": float(r["heldout_balanced_accuracy"])
                 if r["heldout_balanced_accuracy"] else None} for r in rows]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "labels.parquet").to_pylist()
    assert [r["feature"] for r in rows] == [0, 1, DEAD_FEATURE, 5, 6]
    by = {r["feature"]: r for r in rows}
    for f in (0, 1):
        assert by[f]["status"] == "ok" and by[f]["label"] == labels[f].label
        assert by[f]["converged"] == labels[f].converged
        assert by[f]["heldout_balanced_accuracy"] == pytest.approx(
            labels[f].metrics["heldout_balanced_accuracy"])
    assert by[DEAD_FEATURE]["status"] == "dead" and by[DEAD_FEATURE]["label"] is None
    for f in (0, 1, DEAD_FEATURE):  # the verdict is a column, with its reason
        assert by[f]["verdict"] == labels[f].verdict.value
        assert by[f]["verdict_reason"] == labels[f].verdict.reason
    assert by[5]["status"] == "error" and "simulated" in by[5]["error"]
    assert by[6]["status"] == "pending" and by[6]["label"] is None
    # One word per meaning, counts as integers: `retries` (process starts less one) is the
    # store's, `attempts` the optimisation's.
    assert "retries" in rows[0] and "metric_attempts" not in rows[0]
    count = (lambda v: v) if fmt == "parquet" else str
    for f in (0, 1):
        assert by[f]["retries"] == count(0)
        assert by[f]["attempts"] == count(len(labels[f].attempts))
        assert by[f]["steps_total"] == count(sum(a.steps for a in labels[f].attempts))


def test_export_only_explained_keeps_other_labels_out_of_neuronpedia(run_dir, tmp_path):
    labels = load_labelset(run_dir)
    for name, flags in (("all", []), ("trusted", ["--only-explained"])):
        out = tmp_path / name
        assert main(["export", str(run_dir), "--to", str(out), *flags]) == 0
        records = [json.loads(x) for x in (out / "neuronpedia.jsonl").read_text().splitlines()]
        notes = {int(r["index"]): json.loads(r["notes"]) for r in records}
        assert all(n["verdict"] == labels[f].verdict.value for f, n in notes.items())
        want = labels.explained if flags else labels.labels
        assert sorted(notes) == sorted(want)
        assert list(LabelSet.load(out / SIDECAR_FILENAME)) == list(labels)  # kept whole


def _batch_rows(folder):
    return [json.loads(line) for p in sorted(folder.glob("batch-*.jsonl.gz"))
            for line in gzip.decompress(p.read_bytes()).decode("utf-8").splitlines()]


def test_export_neuronpedia_writes_the_import_layout(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    args = ["export", str(run_dir), "--to", str(out), "--format", "csv", "--neuronpedia"]
    assert main([*args, "--records-per-file", "1"]) == 0
    printed = capsys.readouterr().out
    model_id, layer = NEURONPEDIA_ID.split("/")
    folder = out / "neuronpedia" / model_id / layer  # the source's folder, as Neuronpedia's
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file()) == [
        "explanation_scores/batch-0.jsonl.gz", "explanation_scores/batch-1.jsonl.gz",
        "explanations/batch-0.jsonl.gz", "explanations/batch-1.jsonl.gz"]
    assert f"explanations: 2 in 2 file(s) under {folder / 'explanations'}" in printed
    scores = _batch_rows(folder / "explanation_scores")
    assert f"scores:       {len(scores)} in 2 file(s) under " in printed
    assert "2 explanation records" in printed  # neuronpedia.jsonl, the readable view, too
    rows = _batch_rows(folder / "explanations")
    readable = [json.loads(x) for x in (out / "neuronpedia.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == ["0", "1"]
    assert [r["id"] for r in rows] == [r["id"] for r in readable]
    assert {s["explanationId"] for s in scores} == {r["id"] for r in rows}
    with RunStore(run_dir, create=False) as store:  # createdAt: when the run began
        began = datetime.fromtimestamp(store.get_meta("created_at"), UTC)
    assert {r["createdAt"] for r in rows + scores} == {
        began.replace(microsecond=began.microsecond // 1000 * 1000).isoformat(
            timespec="milliseconds")}
    before = {p: p.read_bytes() for p in folder.rglob("*.gz")}
    assert main([*args, "--records-per-file", "1"]) == 0  # again: the same bytes
    assert {p: p.read_bytes() for p in folder.rglob("*.gz")} == before
    assert "removed:" not in capsys.readouterr().out
    assert main(args) == 0  # 1024 per file: one file, the earlier second one goes
    assert "removed:      2 file(s) of the earlier export" in capsys.readouterr().out
    assert [p.name for p in (folder / "explanations").iterdir()] == ["batch-0.jsonl.gz"]
    assert [r["id"] for r in _batch_rows(folder / "explanations")] == [r["id"] for r in rows]


def test_export_neuronpedia_without_an_id_is_a_one_line_error(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
    with RunStore(copy) as store:
        store.set_meta(info={**store.get_meta("info"), "neuronpedia_id": None})
    out = tmp_path / "export"
    assert main(["export", str(copy), "--to", str(out), "--neuronpedia"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tokenlabel: error: No Neuronpedia id")
    assert "--neuronpedia-id" in err[0]
    assert not out.exists()  # asked for by name: nothing is written without it
    assert main(["export", str(copy), "--to", str(out), "--neuronpedia", "--neuronpedia-id",
                 NEURONPEDIA_ID, "--neuronpedia-author-id", "user1"]) == 0
    capsys.readouterr()
    rows = _batch_rows(out / "neuronpedia" / NEURONPEDIA_ID / "explanations")
    assert [r["index"] for r in rows] == ["0", "1"]
    assert {r["authorId"] for r in rows} == {"user1"}
    assert main(["export", str(copy), "--to", str(out), "--records-per-file", "2"]) == 2
    assert "add --neuronpedia" in capsys.readouterr().err
    assert main(["export", str(copy), "--to", str(out), "--neuronpedia", "--neuronpedia-id",
                 NEURONPEDIA_ID, "--records-per-file", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "records_per_file must be an int >= 1" in err[0]


def test_a_polysemantic_flag_shows_in_status_export_and_report(run_dir, tmp_path, capsys):
    # A feature one label does not explain must not read as a plain one-concept label
    # anywhere a researcher looks.
    import dataclasses
    import shutil

    from saelens_tokenlabel.records.result import Polysemantic

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("cache"))
    flag = Polysemantic(labels=["color", "food"], label_token_ids=[[1], [2]],
                        balanced_accuracy=[0.74, 0.71], union_balanced_accuracy=0.97,
                        coverage=[0.5, 0.5])
    with RunStore(copy) as store:
        (r,) = store.results([1])
        store.put([dataclasses.replace(r, polysemantic=flag)])
    assert main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "1 polysemantic" in out and "polysemantic: 'color' + 'food'" in out
    assert main(["status", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["polysemantic"] == 1

    out_dir = tmp_path / "export"
    assert main(["export", str(copy), "--to", str(out_dir), "--format", "csv"]) == 0
    with (out_dir / "labels.csv").open() as fh:
        rows = {int(row["feature"]): row for row in csv.DictReader(fh)}
    assert rows[1]["polysemantic"] == "color + food" and rows[0]["polysemantic"] == ""
    records = {rec["index"]: rec for rec in map(
        json.loads, (out_dir / "neuronpedia.jsonl").read_text().splitlines())}
    assert json.loads(records["1"]["notes"])["polysemantic"]["labels"] == ["color", "food"]
    assert "polysemantic" not in json.loads(records["0"]["notes"])
    labels = LabelSet.load(out_dir / SIDECAR_FILENAME)
    assert labels[1].polysemantic == flag
    assert labels.summary()["labels"]["1"]["polysemantic"] == ["color", "food"]
    assert "polysemantic" not in labels.summary()["labels"]["0"]

    report = tmp_path / "report"
    assert main(["report", str(copy), "--out", str(report)]) == 0
    capsys.readouterr()
    index = next(report.glob("*.html")).read_text()
    assert "polysemantic (one label does not explain them): 1" in index
    page = (report / "features" / "1.html").read_text()
    assert "one label does not explain it" in page and "&#x27;color&#x27; + " in page


def test_status_and_export_of_a_missing_run_are_clear_errors(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "No run store" in capsys.readouterr().err
    (tmp_path / "run.sqlite").write_bytes(b"garbage" * 200)
    assert main(["export", str(tmp_path)]) == 2
    assert "not a readable run store" in capsys.readouterr().err


def _big_store(folder, n: int) -> None:
    """A run store of `n` finished features, built directly in SQLite (no labeling)."""
    import sqlite3

    from saelens_tokenlabel.records.result import LabelResult, Trajectory
    from saelens_tokenlabel.run.store import STORE_FILENAME

    RunStore(folder).close()
    result = LabelResult(label="cat", label_tokens=["cat"], label_token_ids=[5],
                         probability=0.9, converged=True, steps=10, evaluator="toy",
                         metrics={"heldout_balanced_accuracy": 0.9, "heldout_f1": 0.9},
                         trajectory=Trajectory()).to_dict()
    con = sqlite3.connect(folder / STORE_FILENAME)
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('info', ?)", (json.dumps(
        {"neuronpedia_id": NEURONPEDIA_ID, "d_sae": n, "evaluator": "toy",
         "model_name": "tiny-subject", "hook_name": "blocks.0.hook_resid_pre"}),))
    con.executemany(
        "INSERT INTO features(feature, status, result, attempts, started_at, finished_at, "
        "verdict, method, polysemantic) VALUES (?, 'ok', ?, 1, ?, ?, NULL, 'descended', 0)",
        ((f, json.dumps({**result, "feature": f}), 1000.0 + f, 1001.0 + f) for f in range(n)))
    con.commit()
    con.close()


@pytest.mark.slow
def test_status_and_export_of_a_131k_row_store_run_as_many_statements_as_of_a_small_one(
        tmp_path, monkeypatch, capsys):
    """A whole 131k-feature SAE's store: `tokenlabel status` and `tokenlabel export`
    finish, and the SQL statements they run do not grow with the rows (what they read grows
    with what they write; how often they ask does not)."""
    import sqlite3

    from saelens_tokenlabel.run import store as store_module

    statements: list[str] = []
    connect = sqlite3.connect

    def counting(*args, **kwargs):
        con = connect(*args, **kwargs)
        con.set_trace_callback(statements.append)
        return con

    monkeypatch.setattr(store_module.sqlite3, "connect", counting)
    counts = {}
    for n in (1_000, 131_072):
        folder = tmp_path / str(n)
        _big_store(folder, n)
        statements.clear()
        assert main(["status", str(folder)]) == 0
        assert f"{n}/{n} finished" in capsys.readouterr().out
        status = len(statements)
        statements.clear()
        assert main(["export", str(folder), "--to", str(tmp_path / f"out{n}"),
                     "--neuronpedia", "--format", "csv"]) == 0
        assert f"{n} explanation records" in capsys.readouterr().out
        counts[n] = (status, len(statements))
    assert counts[131_072] == counts[1_000], counts
    with open(tmp_path / "out131072" / "labels.csv", newline="") as fh:
        assert sum(1 for _ in csv.DictReader(fh)) == 131_072
