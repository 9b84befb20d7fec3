"""CPU threads of a run (`run.threads`): passive waiting and one thread per usable core by
default, the environment's settings kept, explicit ones winning, the wait policy set only
before torch loads; the command line's flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelens_tokenlabel.cli import build_parser
from saelens_tokenlabel.cli.shared import cpu_run, prepare_threads, thread_argv
from saelens_tokenlabel.run import threads

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keep_threads(monkeypatch):
    """Restore torch's threads and the thread variables after the test."""
    n = torch.get_num_threads()
    for var in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield monkeypatch
    torch.set_num_threads(n)


def test_usable_cores_are_the_affinity_within_the_container_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert threads.usable_cores(tmp_path / "missing") == affinity
    cpu_max.write_text("max 100000\n")
    assert threads.usable_cores(cpu_max) == affinity
    cpu_max.write_text("150000 100000\n")  # a quota of 1.5 cores: 2 threads at most
    assert threads.usable_cores(cpu_max) == min(affinity, 2)
    cpu_max.write_text("50000 100000\n")
    assert threads.usable_cores(cpu_max) == 1
    cpu_max.write_text("garbage")
    assert threads.usable_cores(cpu_max) == affinity


def test_defaults_keep_the_environment_and_explicit_settings_win(keep_threads):
    mp = keep_threads
    mp.setattr(threads, "torch_loaded", lambda: False)  # as before torch is imported
    assert threads.set_wait_policy() == ("PASSIVE", "")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    mp.setenv("OMP_WAIT_POLICY", "active")
    assert threads.set_wait_policy() == ("ACTIVE", "")  # the environment's
    assert threads.set_wait_policy("unset") == (None, "")  # explicit wins
    assert "OMP_WAIT_POLICY" not in os.environ
    with pytest.raises(ValueError, match="choose one of passive, active, unset"):
        threads.set_wait_policy("sometimes")
    assert threads.default_threads() == threads.usable_cores()
    mp.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    assert threads.set_threads() == 3 and torch.get_num_threads() == 3
    assert threads.set_threads(1) == 1
    with pytest.raises(ValueError, match="threads must be >= 1"):
        threads.cpu_threads(0)


def test_after_torch_loaded_the_wait_policy_stays_and_says_so(keep_threads, caplog):
    got = threads.cpu_threads(1, "active")
    assert got.threads == 1 and got.wait_policy is None
    assert "OMP_WAIT_POLICY stays unset" in got.note and "before importing torch" in got.note
    assert got.note in caplog.text and "OMP_WAIT_POLICY" not in os.environ
    # Nothing to say when the policy asked for is the one in effect.
    keep_threads.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert threads.cpu_threads(1, "passive").note == ""


@pytest.mark.subprocess
def test_a_fresh_process_gets_passive_waiting_before_torch_loads():
    code = ("import os, sys\nimport saelens_tokenlabel as stl\n"
            "assert 'torch' not in sys.modules\nr = stl.cpu_threads()\n"
            "import torch\nprint(r.wait_policy, os.environ['OMP_WAIT_POLICY'], r.threads, "
            "torch.get_num_threads(), r.note == '')")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",
                                                            "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    n = str(threads.usable_cores())
    assert out == ["PASSIVE", "PASSIVE", n, n, "True"]


def test_the_command_line_sets_them_for_cpu_runs(keep_threads):
    mp = keep_threads
    mp.setattr(threads, "torch_loaded", lambda: False)
    parser = build_parser()
    for argv in (["demo", "--out", "x"], ["synthetic", "animals", "--evaluator", "toy"],
                 ["compare", "run", "--explanations", "expl.tsv"],
                 ["label", "--sae-path", "s", "--corpus", "c", "--evaluator", "toy",
                  "--out", "o"]):
        args = parser.parse_args([*argv, "--threads", "1", "--omp-wait-policy", "active"])
        assert (args.threads, args.omp_wait_policy) == (1, "active")
        assert thread_argv(args) == ["--threads", "1", "--omp-wait-policy", "active"]
    args = parser.parse_args(["demo", "--out", "x"])
    assert thread_argv(args) == []
    prepare_threads(args)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    torch.set_num_threads(1)
    cpu_run(args, "cuda")  # a GPU run keeps torch's threads
    assert torch.get_num_threads() == 1
    cpu_run(args, "cpu")
    assert torch.get_num_threads() == threads.usable_cores()
    # Commands that run no model have no thread flags and set nothing.
    mp.delenv("OMP_WAIT_POLICY")
    prepare_threads(parser.parse_args(["status", "run"]))
    assert "OMP_WAIT_POLICY" not in os.environ
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--out", "x", "--threads", "0"])
