"""Claims in the run store: two processes on one run folder split the features (each labeled
exactly once); a killed process's claims are taken over only after their lease; stores from
before claims still open."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saelens_tokenlabel.descent.batch import label_batch
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.run import RunStore
from saelens_tokenlabel.run.claims import Claimer
from saelens_tokenlabel.run.executors import LocalExecutor
from saelens_tokenlabel.run.options import RunOptions
from saelens_tokenlabel.run.pipeline import label_sae_features

from .claimrun import FEATURES, run, save_inputs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(subject, toy_corpus, tmp_path_factory):
    """Saved toy inputs, and their labels from an uninterrupted run in memory (which also
    fills the activation cache the processes share)."""
    tmp = tmp_path_factory.mktemp("claims")
    save_inputs(tmp, subject, toy_corpus[:60])
    return tmp, run(tmp, None)


def test_claims_are_exclusive_expire_and_clear(tmp_path):
    with RunStore(tmp_path) as s:
        s.add_features(range(6))
        assert s.claim([0, 1, 2], 2, "a", 60) == [0, 1]
        assert s.claim([0, 1, 2, 3], 5, "b", 60) == [2, 3]  # never another's live claim
        assert s.claim([0, 1], 2, "a", 60) == []  # nor twice for the same owner
        s.put([status_result(0, "dead", "x")])  # a result clears its claim
        s.fail([2], "RuntimeError: boom")  # so does a failure
        assert set(s.claims()) == {1, 3}
        summary = s.summary()
        assert summary["claimed"] == 2 and summary["claim_owners"] == {"a": 1, "b": 1}
        assert s.claim([0, 1, 2, 3, 4], 9, "c", 0.2) == [2, 4]  # not finished 0
        time.sleep(0.25)
        assert s.claim([4, 5], 9, "d", 60) == [4, 5]  # c's claim on 4 expired
        s.release("a")
        assert s.claim([1, 3], 9, "d", 60) == [1]  # a released 1; b still holds 3
        assert {f: c["owner"] for f, c in s.claims().items()} == {1: "d", 3: "b", 4: "d",
                                                                   5: "d"}


def test_a_claimer_takes_over_expired_claims_and_waits_for_live_ones(tmp_path):
    with RunStore(tmp_path) as s:
        s.add_features(range(6))
        assert s.claim([0, 1], 2, "dead-process", 0.5) == [0, 1]
        expires = max(c["expires_at"] for c in s.claims().values())
        claimer = Claimer(s, lease_s=5.0, poll_s=0.05)
        got = []
        for group in claimer.groups(list(range(6)), 2):
            got.append((group, time.time()))
            s.put([status_result(f, "dead", "x") for f in group])
        assert [g for g, _ in got] == [[2, 3], [4, 5], [0, 1]]
        assert got[-1][1] >= expires  # taken over only once the lease ran out
        assert s.claims() == {} and s.finished() == set(range(6))


def test_a_store_from_before_claims_opens_and_gets_the_columns(tmp_path):
    db = tmp_path / "run.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE features (feature INTEGER PRIMARY KEY, status TEXT NOT NULL, "
        "result TEXT, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, started_at REAL, "
        "finished_at REAL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('format_version', '1');"
        "INSERT INTO features(feature, status) VALUES (0, 'pending'), (1, 'running');")
    con.commit()
    con.close()
    with RunStore(tmp_path, create=False) as s:  # a reader leaves the file as it is
        assert not s.has_claims()
        summary = s.summary()
        assert summary["claimed"] == 0 and summary["claim_owners"] == {}
    with RunStore(tmp_path) as s:
        assert s.has_claims()
        assert s.claim([0, 1], 2, "a", 60) == [0, 1]
        assert [r["status"] for r in s.rows()] == ["pending", "running"]


def test_run_options_and_unknown_keywords(subject, sae, toy_corpus, fast_evaluator):
    with pytest.raises(TypeError, match=r"^label_sae_features\(\) got unexpected keyword "
                                        r"argument\(s\) feature_per_batch; valid keywords: "
                                        r"cache, examples, options, features_per_batch"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0],
                           feature_per_batch=2)
    with pytest.raises(ValueError, match="lease_s must be > 0"):
        RunOptions(lease_s=0)
    with pytest.raises(ValueError, match="features_per_batch must be >= 1"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0],
                           options=RunOptions(), features_per_batch=0)


_OTHER_PROCESS = """
import json, sys
from saelens_tokenlabel.run.store import RunStore, new_owner
with RunStore(sys.argv[1]) as store:
    print(json.dumps(store.claim(json.loads(sys.argv[2]), 99, new_owner(), 60.0)))
"""


def test_a_batch_longer_than_its_lease_keeps_its_claims(subject, toy_corpus, tmp_path, capsys):
    """The first batch runs for five leases. The heartbeat thread renews its claims all along:
    a second process started meanwhile gets none of the batch's features, and `tokenlabel
    status` lists them as claimed by this process, mid-batch."""
    from saelens_tokenlabel.cli import main

    save_inputs(tmp_path, subject, toy_corpus[:40])
    out, lease = tmp_path / "long", 0.5
    seen: dict = {}

    def label(batch, evaluator, config):
        if not seen:
            t0 = time.time()
            time.sleep(5 * lease)
            other = subprocess.run(
                [sys.executable, "-c", _OTHER_PROCESS, str(out), json.dumps(batch.features)],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": str(REPO)})
            assert other.returncode == 0, other.stderr
            seen.update(batch=batch.features, other=json.loads(other.stdout), t0=t0)
            with RunStore(out, create=False) as store:
                seen["claims"] = store.claims()
            assert main(["status", str(out)]) == 0
            seen["status"] = capsys.readouterr().out
        return label_batch(batch, evaluator, config)

    run(tmp_path, out, lease_s=lease, executor=LocalExecutor(label=label))
    assert seen["batch"] == [0, 1] and seen["other"] == []  # nothing taken over
    claims = seen["claims"]
    assert sorted(claims) == [0, 1] and len({c["owner"] for c in claims.values()}) == 1
    owner = claims[0]["owner"]
    assert owner.split(":")[1] == str(os.getpid())  # this process, renewed past its lease:
    assert all(c["expires_at"] > seen["t0"] + 4 * lease for c in claims.values())
    status = seen["status"]
    assert "claimed:      2 features being labeled" in status
    assert f"\n  {owner}  0, 1\n" in status and "running=2" in status
    assert "interrupted" not in status
    with RunStore(out, create=False) as store:
        assert store.claims() == {} and store.finished() == set(FEATURES)
        assert [r["starts"] for r in store.rows()] == [1] * len(FEATURES)


def _child(tmp: Path, out: Path, lease_s: float, started: Path | None = None
           ) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tests.run.claimrun", str(tmp), str(out), str(lease_s)]
    return subprocess.Popen(cmd + ([str(started)] if started else []), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _start_and_kill(tmp, out, lease_s: float, started) -> list[int]:
    """Start a labeling child, SIGKILL it once it has claimed and started its first batch
    (it says so in `started` and then waits: no race), and return that batch's features."""
    proc = _child(tmp, out, lease_s, started)
    try:
        deadline = time.monotonic() + 300
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), proc.stderr.read().decode()[-3000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    return [int(f) for f in started.read_text().split()]


def same_labels(got, ref) -> None:
    assert list(got) == list(ref)
    for f in ref:
        a, b = got[f], ref[f]
        assert (a.status, a.label, a.label_token_ids, a.steps) == \
            (b.status, b.label, b.label_token_ids, b.steps), f
        assert a.extra.examples == b.extra.examples, f


@pytest.mark.subprocess
def test_two_processes_on_one_run_folder_label_each_feature_once(inputs, tmp_path):
    tmp, ref = inputs
    out = tmp_path / "shared"
    procs = [_child(tmp, out, 300.0) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    with RunStore(out, create=False) as store:
        rows = store.rows()
        assert [r["feature"] for r in rows] == FEATURES
        assert [r["starts"] for r in rows] == [1] * len(FEATURES)  # each labeled once
        assert store.claims() == {}  # both released what they held
        same_labels(store.labelset(), ref)


@pytest.mark.subprocess
def test_a_killed_process_claims_are_taken_over_after_the_lease(inputs, tmp_path):
    tmp, ref = inputs
    out, started = tmp_path / "killed", tmp_path / "started"
    lease = 3.0
    held = _start_and_kill(tmp, out, lease, started)
    assert held == [0, 1]  # the first batch: claimed, started, then killed
    with RunStore(out) as store:
        # As if the killed process ran on another node sharing the run folder: nothing here
        # can tell that it is dead, so only its lease frees its claims. (On this host a
        # dead pid frees them at once: the next test.)
        store._db.execute("UPDATE features SET owner = 'other-node:' || owner "
                          "WHERE owner IS NOT NULL")
        claims = store.claims(expired=True)  # (a stalled machine may be past the lease now)
        assert sorted(claims) == held and store.finished() == set()
        expires = max(c["expires_at"] for c in claims.values())
        if time.time() + 0.5 < expires:  # (unless this machine stalled for the lease)
            # A probe with a negligible lease: should it win after all, it blocks nothing.
            assert store.claim(held, 2, "probe", 1e-3) == []
    labeled: dict[int, float] = {}

    def label(batch, evaluator, config):
        labeled.update({f: time.time() for f in batch.to_label})
        return label_batch(batch, evaluator, config)

    got = run(tmp, out, lease_s=lease, executor=LocalExecutor(label=label))
    assert set(labeled) >= {0, 1}
    assert min(labeled[f] for f in held) >= expires  # not before the dead claim expired
    same_labels(got, ref)
    with RunStore(out, create=False) as store:
        rows = {r["feature"]: r for r in store.rows()}
        assert {f: r["starts"] for f, r in rows.items()} == {
            f: (2 if f in held else 1) for f in FEATURES}
        assert store.claims() == {}
        same_labels(store.labelset(), ref)


@pytest.mark.subprocess
def test_claims_of_a_killed_process_on_this_host_are_free_at_once(inputs, tmp_path):
    """kill -9, then rerun on the same machine: the dead pid's claims are taken over without
    waiting for the lease (a long one here), and every feature is labeled once more at most."""
    tmp, ref = inputs
    out, started = tmp_path / "killed", tmp_path / "started"
    held = _start_and_kill(tmp, out, 600.0, started)
    with RunStore(out) as store:
        dead = store.claims(expired=True)
        assert sorted(dead) == held and all(c["expires_at"] > time.time() + 60
                                            for c in dead.values())
        assert store.claims() == {}  # a dead process of this host holds nothing
    t0 = time.monotonic()
    got = run(tmp, out, lease_s=600.0)
    assert time.monotonic() - t0 < 300  # not the 600 s lease
    same_labels(got, ref)
    with RunStore(out, create=False) as store:
        attempts = {r["feature"]: r["starts"] for r in store.rows()}
        assert attempts == {f: (2 if f in held else 1) for f in FEATURES}
        assert store.claims(expired=True) == {}
