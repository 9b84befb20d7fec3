"""A labeling run killed with SIGKILL in the middle, then resumed by the same command: every
feature ends up in the store exactly once, with the labels of an uninterrupted run.

No race between the kill and the child finishing: before the child starts, the test claims
every feature but the first in the run store (as another process would), so the child labels
feature 0 and then waits for those claims; the test kills it there, and gives the claims
back before the resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saelens_tokenlabel import save_local_model
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.run import STORE_FILENAME, RunStore, load_labelset, pipeline
from saelens_tokenlabel.sae.examples import select_examples

from ..sae.planted import D_SAE, planted_sae
from .test_claims import same_labels

REPO = Path(__file__).resolve().parents[2]


def _finished(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM features WHERE status NOT IN "
                               "('pending', 'running', 'error')").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # created but no table yet
        return 0


@pytest.mark.subprocess
def test_sigkill_then_resume_gives_the_uninterrupted_labels(subject, toy_corpus, tmp_path,
                                                            capsys, monkeypatch):
    sae_dir, model_dir = tmp_path / "sae", tmp_path / "model"
    planted_sae().save_model(sae_dir)
    save_local_model(subject, model_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:60]) + "\n")

    def args(out: Path) -> list[str]:
        return ["label", "--sae-path", str(sae_dir), "--model", str(model_dir), "--corpus",
                str(corpus), "--features", "all", "--evaluator", "toy", "--out", str(out),
                "--cache-dir", str(tmp_path / "cache"), "--steps", "10", "--batch-size", "8",
                "--lr", "1.0", "--threshold", "0", "--features-per-batch", "1",
                "--n-top", "6", "--n-quantile", "4", "--n-random", "6", "--n-near-miss", "4",
                "--device", "cpu"]

    ref_dir = tmp_path / "ref"
    assert main(args(ref_dir)) == 0  # uninterrupted (it also fills the activation cache)
    ref = load_labelset(ref_dir)
    assert list(ref) == list(range(D_SAE)) and ref.by_status()["ok"]

    out = tmp_path / "killed"
    db = out / STORE_FILENAME
    with RunStore(out) as store:
        store.add_features(range(D_SAE))
        assert store.claim(range(1, D_SAE), D_SAE, "test", 600) == list(range(1, D_SAE))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "saelens_tokenlabel.cli", *args(out)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while _finished(db) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the child ended before the kill"
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    n_at_kill = _finished(db)
    assert n_at_kill == 1, f"killed with {n_at_kill} of {D_SAE} features done"
    assert 1 <= n_at_kill < D_SAE, f"killed with {n_at_kill} of {D_SAE} features done"
    with RunStore(out) as store:  # the store opens and reads after SIGKILL
        assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.release("test")
    assert main(["status", str(out)]) == 0
    assert f"{n_at_kill}/{D_SAE} finished" in capsys.readouterr().out

    selected: list[list[int]] = []

    def recording(cache, features, *a, **k):
        selected.append(list(features))
        return select_examples(cache, features, *a, **k)

    monkeypatch.setattr(pipeline, "select_examples", recording)
    assert main(args(out)) == 0  # the same command resumes
    # Examples are selected only for the features still to label; `same_labels` checks
    # that they are the examples of the uninterrupted run.
    assert selected == [list(range(1, D_SAE))]
    with RunStore(out, create=False) as store:
        rows = store.rows()
        assert [r["feature"] for r in rows] == list(range(D_SAE))  # each exactly once
        assert all(r["status"] in ("ok", "dead", "unlabelable") for r in rows)
        assert store._db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == D_SAE
    same_labels(load_labelset(out), ref)
