"""The run store: statuses and attempts, resume semantics, settings checks, atomic writes and a
full disk (a real SQLITE_FULL from a size-limited store), and `load_labelset`."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.descent.batch import label_batch
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.run import (
    STORE_FILENAME,
    RunMismatchError,
    RunStore,
    RunStoreError,
    RunStoreFullError,
    load_labelset,
)
from saelens_tokenlabel.run.executors import LocalExecutor
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig

from ..sae.planted import planted_sae

FEW = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4)
QUICK = LabelConfig(steps=2, batch_size=6)


def test_lifecycle_statuses_attempts_and_reopen(tmp_path):
    with RunStore(tmp_path) as s:
        assert s.path == tmp_path / STORE_FILENAME
        s.add_features(range(4))
        s.start([0, 1])
        s.put([status_result(0, "dead", "never fires")])
        s.fail([1], "RuntimeError: boom")
        s.start([1, 2])  # 1 again: a second attempt; 2 left "running" (killed)
        assert s.finished() == {0}
    with RunStore(tmp_path) as s:  # reopened: all of it was committed
        rows = {r["feature"]: r for r in s.rows()}
        assert {f: r["status"] for f, r in rows.items()} == {
            0: "dead", 1: "running", 2: "running", 3: "pending"}
        assert rows[1]["starts"] == 2 and rows[1]["error"] is None
        assert rows[3]["starts"] == 0
        s.add_features([0, 5])  # known rows keep their status
        assert s.finished([0, 5]) == {0}
        summary = s.summary()
        assert summary["total"] == 5 and summary["finished"] == 1
        # 1 and 2 are "running" rows no live claim holds (their process stopped): never
        # shown as running.
        assert summary["counts"] == {"dead": 1, "interrupted": 2, "pending": 2}
        assert summary["interrupted"] == [1, 2] and summary["claimed"] == 0
        assert summary["retries"] == {"starts": 4, "max": 1, "retried": 1}
        assert summary["last"][0]["feature"] == 0
    labels = load_labelset(tmp_path)
    assert list(labels) == [0] and labels[0].extra.message == "never fires"
    with RunStore(tmp_path) as s:  # a status this version does not know is a result too
        s.put([status_result(3, "non_finite", "NaN activations")])
        assert s.finished() == {0, 3}
    assert list(load_labelset(tmp_path)) == [0, 3]


def test_bind_refuses_other_settings_and_names_the_difference(tmp_path):
    with RunStore(tmp_path) as s:
        s.bind({"identity": {"sae": "abc"}, "label_config": {"lr": 0.1}})
        s.bind({"identity": {"sae": "abc"}, "label_config": {"lr": 0.1}})  # same: fine
        with pytest.raises(RunMismatchError, match=r"another SAE.*sae: 'abc' there, 'xyz' now"):
            s.bind({"identity": {"sae": "xyz"}}, names={"identity": "another SAE"})
        with pytest.raises(ValueError, match="another label config.*another output folder"):
            s.bind({"label_config": {"lr": 0.2}})


def test_not_a_store_and_no_store_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run store"):
        RunStore(tmp_path / "none", create=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / STORE_FILENAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunStoreError, match="not a readable run store"):
        RunStore(bad)


def _fill_up(store: RunStore) -> None:
    """Cap the store at its current size: the next write that needs a page fails with
    SQLite's own SQLITE_FULL, as on a full disk."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")


def test_full_store_keeps_what_was_committed(tmp_path):
    with RunStore(tmp_path) as s:
        s.add_features(range(6))
        s.put([status_result(0, "dead", "x")])
        _fill_up(s)
        with pytest.raises(RunStoreFullError) as err:
            s.put([status_result(f, "dead", "y" * 20_000) for f in (1, 2, 3)])
        msg = str(err.value)
        assert "is full" in msg and "1 features finished before are saved" in msg
        assert "rerun the same command" in msg
        assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
        assert s.finished() == {0}  # the failed transaction left nothing half-written
    with RunStore(tmp_path) as s:
        assert s.finished() == {0}
        assert s._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_enospc_from_the_os_is_a_full_store_error(tmp_path, monkeypatch):
    with RunStore(tmp_path) as s:
        s.add_features([0])
        real = s._db

        class Disk:
            def __getattr__(self, name):
                return getattr(real, name)

            def executemany(self, *a):
                raise sqlite3.OperationalError("database or disk is full")

        s._db = Disk()
        with pytest.raises(RunStoreFullError, match="Free some space"):
            s.put([status_result(0, "dead", "x")])
        s._db = real


def test_label_run_on_a_full_disk_says_what_is_saved_and_resumes(subject, toy_corpus,
                                                                   fast_evaluator, tmp_path):
    sae = planted_sae()
    kw = dict(config=QUICK, cache=CacheConfig(cache_dir=tmp_path / "c"), examples=FEW,
              features_per_batch=2)
    run = tmp_path / "run"
    store = RunStore(run)
    real_put = store.put

    def put_then_fill(results):
        real_put(results)
        _fill_up(store)  # the disk fills up right after the first batch

    store.put = put_then_fill
    with pytest.raises(RunStoreFullError) as err:
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5],
                           run_dir=store, **kw)
    assert "2 features finished before are saved" in str(err.value)
    store.close()
    assert sorted(load_labelset(run)) == [0, 1]
    # Space freed (a fresh connection has no cap): the same call finishes the rest.
    done = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5],
                              run_dir=run, **kw)
    assert list(done) == [0, 1, 4, 5]
    fresh = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5],
                               run_dir=tmp_path / "fresh", **kw)
    assert [done[f].to_dict() for f in done] == [fresh[f].to_dict() for f in fresh]


def test_rerun_skips_finished_and_retries_errors(subject, toy_corpus, fast_evaluator, tmp_path):
    sae = planted_sae()
    calls, failures = [], [RuntimeError("simulated failure")]

    def flaky(batch, evaluator, config):
        calls.append(batch.to_label)
        if batch.to_label[0] == 4 and failures:
            raise failures.pop()
        return label_batch(batch, evaluator, config)

    kw = dict(config=QUICK, cache=CacheConfig(cache_dir=tmp_path / "c"), examples=FEW,
              features_per_batch=1, run_dir=tmp_path / "run",
              executor=LocalExecutor(label=flaky))
    with pytest.raises(RuntimeError, match="simulated") as err:
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5], **kw)
    assert "2 features were labeled" in str(err.value.__notes__)
    with RunStore(tmp_path / "run") as s:
        rows = {r["feature"]: r for r in s.rows()}
    assert rows[4]["status"] == "error" and "simulated failure" in rows[4]["error"]
    assert rows[5]["status"] == "pending"
    calls.clear()
    labels = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5], **kw)
    assert calls == [[4], [5]]  # 0 and 1 were finished; 4 is retried
    assert list(labels) == [0, 1, 4, 5] and labels[4].status == "ok"
    with RunStore(tmp_path / "run") as s:
        rows = {r["feature"]: r for r in s.rows()}
    assert rows[4]["starts"] == 2 and rows[0]["starts"] == 1
    calls.clear()
    assert list(label_sae_features(sae, subject, fast_evaluator, toy_corpus, [1], **kw)) == [1]
    assert calls == []
    # Other results-changing settings: refused; a performance-only setting: fine.
    with pytest.raises(ValueError, match="another label config"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0],
                           **{**kw, "config": LabelConfig(steps=3, batch_size=6)})
    with pytest.raises(ValueError, match="another example config"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0],
                           **{**kw, "examples": ExampleConfig(n_top=5)})
    with pytest.raises(ValueError, match="another SAE, model, evaluator or corpus"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus[:-1], [0], **kw)
    same = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5],
                              **{**kw, "config": LabelConfig(
                                  steps=2, batch_size=6, performance={"max_rows_per_pass": 2})})
    assert calls == [] and same[4].to_dict() == labels[4].to_dict()



def test_opening_a_store_while_another_process_writes_its_first_transaction(tmp_path):
    """Two `tokenlabel label` processes started together on one new --out folder: the second
    switches the new file to WAL while the first holds a write lock on it. SQLite then answers
    "database is locked" at once (no busy wait); the store must wait and open."""
    import sqlite3
    import threading

    from saelens_tokenlabel.run import RunStore

    path = tmp_path / "run.sqlite"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE t(x)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO t VALUES (1)")
    done = threading.Event()
    # The first writer commits after 0.3 s: the second must wait for it, not fail.
    threading.Thread(target=lambda: (done.wait(0.3), first.execute("COMMIT"))).start()
    RunStore(tmp_path).close()
    done.set()
    first.close()


def test_a_store_from_before_contrast_examples_resumes_without_them(tmp_path):
    # Its ExampleConfig has no n_contrast: it was made with none. Resuming with none binds;
    # with the new default, the mismatch names n_contrast.
    from saelens_tokenlabel.run.options import RunOptions
    from saelens_tokenlabel.run.record import open_record

    old = {k: v for k, v in FEW.to_dict().items() if k != "n_contrast"}
    with RunStore(tmp_path) as s:
        s.set_meta(example_config=old)
    none = ExampleConfig.from_stored(old)
    assert none.n_contrast == 0 and FEW.n_contrast == 20
    with open_record(RunOptions(run_dir=tmp_path), {}, QUICK, none, [0]) as record:
        assert record.store is not None
    with pytest.raises(RunMismatchError, match="n_contrast: 0 there, 20 now"):
        with open_record(RunOptions(run_dir=tmp_path), {}, QUICK, FEW, [0]):
            pass
# ---------------------------------------------------------------------- cost with the rows
def _store_of(path, n: int) -> RunStore:
    """A store of `n` features, the first half finished (small results), built in SQLite
    directly; opened (the schema and its indexes) by `RunStore`."""
    import json

    from saelens_tokenlabel.records.result import LabelResult, Trajectory

    RunStore(path).close()
    text = json.dumps(LabelResult(label="cat", label_tokens=["cat"], label_token_ids=[5],
                                  probability=0.9, converged=True, steps=10, metrics={},
                                  trajectory=Trajectory()).to_dict())
    con = sqlite3.connect(path / STORE_FILENAME)
    con.executemany(
        "INSERT INTO features(feature, status, result, attempts, finished_at, method) "
        "VALUES (?, ?, ?, 1, ?, ?)",
        [(f, "ok", text.replace('"feature": null', f'"feature": {f}'), float(f), "descended")
         if f < n // 2 else (f, "pending", None, None, None) for f in range(n)])
    con.commit()
    con.close()
    return RunStore(path)


def _instructions(store: RunStore, work) -> int:
    """SQLite virtual-machine instructions (in hundreds) run by `work(store)`."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    store._db.set_progress_handler(tick, 100)
    try:
        work(store)
    finally:
        store._db.set_progress_handler(None, 0)
    return count[0]


def test_a_rounds_store_work_does_not_grow_with_the_store(tmp_path):
    """What an amortised run asks of the store every round (claim and start a round's
    features group by group, wait for the rest of the round, read back results of the round
    before, look up which are finished) costs the same in a store of 32k rows as in one of
    2k: a per-round scan of the table would make a whole run quadratic."""
    from saelens_tokenlabel.run.claims import Claimer

    def round_of(store: RunStore) -> None:
        claimer = Claimer(store, lease_s=60)
        pending = list(range(1500, 1564))  # pending in both stores
        for group in claimer.groups(pending, 8):
            store.start(group)
            store.put([status_result(f, "dead", "never fires") for f in group])
        before = list(range(900, 964))  # finished in both
        assert len(store.results(before)) == 64 and store.finished(before) == set(before)
        assert store.unfinished(pending) == [] and store.claims(pending) == {}
        claimer.heartbeat()
        claimer.release()

    small = _instructions(_store_of(tmp_path / "small", 2_000), round_of)
    large = _instructions(_store_of(tmp_path / "large", 32_000), round_of)
    assert large < 1.5 * small, (small, large)  # 16x the rows; a scan would be ~16x
