"""Clean stops (`run/stops.py`): SIGTERM and SIGINT end the batch under way, release this
process's claims (their features pending again), close the store and exit 143 / 130 with one
line saying what is saved; the rerun labels as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.descent.batch import label_batch
from saelens_tokenlabel.records.errors import RunInterrupted
from saelens_tokenlabel.run import RunStore, clean_stops
from saelens_tokenlabel.run.executors import LocalExecutor
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.run.stops import deferred
from saelens_tokenlabel.run.threads import default_threads
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig

from ..faults import results
from ..sae.planted import D_SAE
from .test_store import QUICK

REPO = Path(__file__).resolve().parents[2]
FEW = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4)


def _claims_and_statuses(out: Path) -> tuple[list, dict[int, str]]:
    with RunStore(out, create=False) as store:
        owners = store._db.execute("SELECT feature, owner FROM features WHERE owner IS NOT "
                                   "NULL").fetchall()
        return owners, {r["feature"]: r["status"] for r in store.rows()}


def test_a_signal_in_a_deferred_section_is_raised_when_it_ends():
    before = signal.getsignal(signal.SIGTERM)
    reached = False
    with clean_stops():
        with pytest.raises(RunInterrupted) as err, deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, and holds the stop back
            reached = True
        with pytest.raises(RunInterrupted):  # outside a section: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert reached and err.value.signum == signal.SIGTERM and err.value.exit_code == 143
    assert str(err.value) == "stopped by SIGTERM" and isinstance(err.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_mid_run_releases_the_claims_and_the_rerun_labels_as_before(
        subject, sae, toy_corpus, fast_evaluator, tmp_path):
    kw = dict(config=QUICK, cache=CacheConfig(cache_dir=tmp_path / "c"), examples=FEW,
              features_per_batch=1, progress=False)
    ref = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4], **kw)
    calls = []

    def stopping(batch, evaluator, config):
        calls.append(batch.to_label)
        if len(calls) == 2:  # mid-batch, feature 1 claimed and running
            assert _claims_and_statuses(tmp_path / "run")[1][1] == "running"
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return label_batch(batch, evaluator, config)

    run = dict(kw, run_dir=tmp_path / "run")
    with clean_stops(), pytest.raises(RunInterrupted) as err:
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4],
                           executor=LocalExecutor(label=stopping), **run)
    assert err.value.exit_code == 143
    assert (f"1 features were labeled before the stop; 1 finished features are saved in "
            f"{tmp_path / 'run' / 'run.sqlite'}") in " ".join(err.value.__notes__)
    owners, statuses = _claims_and_statuses(tmp_path / "run")
    assert owners == [] and statuses == {0: "ok", 1: "pending", 4: "pending"}
    again = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4], **run)
    assert {f: again[f].to_dict() for f in again} == {f: ref[f].to_dict() for f in ref}


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_tokenlabel_label_mid_batch_is_a_clean_stop(
        fault_world, tmp_path, capsys, sig):
    out, started = tmp_path / "stopped", tmp_path / "started"
    # The uninterrupted run it is compared with ran in this process with the CLI's default
    # thread count; float32 sums depend on the count, so the child uses the same one.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(default_threads()),
           "TOKENLABEL_TEST_STARTED": str(started)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saelens_tokenlabel.cli",
         *fault_world.args(out, "--import", "tests.run.stoprun")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    try:
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the child ended before the signal"
        # The controlled point: feature 1's batch under way, claimed by the child.
        assert started.read_text() == "1"
        owners, statuses = _claims_and_statuses(out)
        assert [f for f, _ in owners] == [1] and statuses[1] == "running"
        assert f":{proc.pid}:" in owners[0][1]
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    err = err.decode()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.strip().splitlines()[-1]
    assert last == (f"tokenlabel: stopped by {signal.Signals(sig).name}. 1 features were "
                    f"labeled before the stop; 1 finished features are saved in "
                    f"{out / 'run.sqlite'} and a rerun of the same call resumes from there.")
    owners, statuses = _claims_and_statuses(out)
    assert owners == []  # no claim left: another host need not wait out the lease
    assert statuses[0] == "ok" and set(statuses.values()) <= {"ok", "dead", "pending"}
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "running" not in shown and f"1/{D_SAE} finished" in shown
    assert main(fault_world.args(out)) == 0  # the rerun: the labels of an uninterrupted run
    assert results(out) == results(fault_world.out)
