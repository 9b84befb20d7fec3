"""CPU threads on a quiet and on a loaded machine: torch's intra-op threads and OpenMP's wait
policy, for the labeling step and the prefix pass of the toy evaluator.

Each setting runs in a fresh worker process (OpenMP reads ``OMP_WAIT_POLICY`` once, when
torch loads it): torch's intra-op threads (1, 2, all cores, or torch's own default) and the
wait policy (unset: the OpenMP runtime's default; ``PASSIVE``: a waiting thread sleeps;
``ACTIVE``: it spins). "Loaded" means one competing busy process (a pure-Python spin loop)
pinned to core 0, started by the bench itself. The settings and the two conditions are
interleaved round by round, so that each sees the same background; each cell is the median
over the rounds of each worker's median step.

    python bench/bench_threads.py                       # bench/threads_cpu.txt
    python bench/bench_threads.py --rounds 3 --out bench/threads_cpu.json
    python bench/bench_threads.py --demo                # also `tokenlabel demo`, loaded

`--demo` also times `tokenlabel demo` with one competing busy process, under the CLI's
defaults and with ``--threads 1``; `--demo-before DIR` with the package in DIR too (a ``git
archive`` of the commit before the CLI chose thread defaults), `--demo-explicit N` with
torch's own settings given as flags. A demo that runs past `--demo-timeout` is stopped and
shown as "> timeout".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
"""The competing busy process: one core, all the time."""
OMP_VARS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
            "TOKENLABEL_THREADS")


# ------------------------------------------------------------------ the worker
def worker(threads: int | None, budget_s: float) -> dict:
    """In a fresh process: the lean labeling step (16 rows) and a prefix pass of 64
    examples of the toy evaluator, at `threads` intra-op threads (None: torch's default)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_labeling import Setup, step_fn

    from saelens_tokenlabel.evaluator.forward import PrefixCache
    from saelens_tokenlabel.toy import load_toy_evaluator

    if threads is not None:
        torch.set_num_threads(threads)
    ev = load_toy_evaluator("cpu")
    s = Setup(ev, 64, 16, "cpu")
    v, batch = s.make(1)
    step = step_fn(s.ctx, v, batch)
    out = {"threads": torch.get_num_threads()}
    for name, fn, most in (("step_ms", step, 60), ("prefix_ms",
                                                   lambda: PrefixCache(ev, s.enc, 64), 8)):
        fn()  # warm-up
        times: list[float] = []
        t_end = time.perf_counter() + budget_s
        while len(times) < 3 or (time.perf_counter() < t_end and len(times) < most):
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
        out[name] = statistics.median(times)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the thread settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    return {**env, **extra}


def run_worker(threads: int | None, policy: str | None, budget_s: float) -> dict:
    env = clean_env(**({"OMP_WAIT_POLICY": policy} if policy else {}))
    cmd = [sys.executable, __file__, "--worker", "--budget", str(budget_s)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def busy(loaded: bool) -> Iterator[None]:
    """One competing busy process pinned to core 0 while inside (nothing if not `loaded`)."""
    if not loaded:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ the grid
def settings(cores: int) -> list[tuple[int | None, str | None]]:
    """(threads, wait policy) pairs: 1, 2 and all cores (and torch's default), each with the
    policy unset, PASSIVE and ACTIVE."""
    counts: list[int | None] = sorted({1, 2, cores})
    counts.append(None)
    return [(n, p) for n in counts for p in (None, "PASSIVE", "ACTIVE")]


def grid(args: argparse.Namespace) -> dict:
    cores = os.cpu_count() or 1
    grid_settings = settings(cores)
    cells: dict[str, dict[str, list[dict]]] = {"quiet": {}, "loaded": {}}
    for r in range(args.rounds):
        for cond in ("quiet", "loaded"):
            with busy(cond == "loaded"):
                for threads, policy in grid_settings:
                    got = run_worker(threads, policy, args.budget)
                    cells[cond].setdefault(key(threads, policy), []).append(got)
                    print(f"round {r + 1} {cond:6s} {key(threads, policy):24s} "
                          f"step {got['step_ms']:8.1f} ms  prefix {got['prefix_ms']:8.1f} ms "
                          f"({got['threads']} threads)", flush=True)
    return {"cores": cores, "rounds": args.rounds, "cells": {
        cond: {k: {m: statistics.median(x[m] for x in v) for m in ("step_ms", "prefix_ms")}
               | {"threads": v[0]["threads"]} for k, v in c.items()}
        for cond, c in cells.items()}}


def key(threads: int | None, policy: str | None) -> str:
    return f"threads={'default' if threads is None else threads} wait={policy or 'unset'}"


def table(out: dict) -> None:
    """Both conditions side by side, and each cell against the best of its condition."""
    cells = out["cells"]
    best = {c: {m: min(x[m] for x in cells[c].values()) for m in ("step_ms", "prefix_ms")}
            for c in cells}
    print("\n| threads | OMP_WAIT_POLICY | quiet: step (ms) | quiet: prefix pass, 64 examples "
          "(ms) | loaded: step (ms) | loaded: prefix pass (ms) |\n|---|---|---|---|---|---|")
    for k in cells["quiet"]:
        threads, policy = (part.split("=")[1] for part in k.split())
        n = cells["quiet"][k]["threads"]
        shown = f"torch's default ({n})" if threads == "default" else threads
        row = [f"{cells[c][k][m]:.1f} ({cells[c][k][m] / best[c][m]:.1f}x)"
               for c in ("quiet", "loaded") for m in ("step_ms", "prefix_ms")]
        print(f"| {shown} | {policy} | " + " | ".join(row) + " |")


# ------------------------------------------------------------------ the demo
def demo_time(env: dict[str, str], argv: list[str], timeout_s: float) -> float | None:
    """Seconds `tokenlabel demo` takes (None: more than `timeout_s`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "saelens_tokenlabel.cli", "demo", "--out", tmp, *argv]
        t0 = time.perf_counter()
        try:
            # From the temporary folder: `python -m` puts the working directory first on the
            # path, where a checkout's package would shadow the one PYTHONPATH names.
            subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                           timeout=timeout_s, cwd=tmp)
        except subprocess.TimeoutExpired:
            return None
        return time.perf_counter() - t0


def demo(args: argparse.Namespace) -> dict:
    """`tokenlabel demo` with one competing busy process: the CLI's defaults, each setting
    explicit, and (`--demo-before`) the package before it chose thread defaults."""
    runs: dict[str, tuple[dict[str, str], list[str]]] = {
        "after: the CLI's defaults (passive waiting, one thread per core)": (clean_env(), []),
        "after, --threads 1": (clean_env(), ["--threads", "1"]),
    }
    if args.demo_explicit:
        runs["after, --omp-wait-policy unset --threads <torch's default>"] = (
            clean_env(), ["--omp-wait-policy", "unset", "--threads", str(args.demo_explicit)])
    if args.demo_before:
        before = clean_env()
        before["PYTHONPATH"] = os.pathsep.join([args.demo_before, before["PYTHONPATH"]])
        runs["before: torch's own settings (no thread defaults)"] = (before, [])
    times: dict[str, list[float | None]] = {k: [] for k in runs}
    for r in range(args.demo_rounds):
        with busy(True):
            for name, (env, argv) in runs.items():
                t = demo_time(env, argv, args.demo_timeout)
                times[name].append(t)
                print(f"demo round {r + 1}, loaded, {name}: "
                      + (f"{t:.1f} s" if t is not None else f"> {args.demo_timeout:.0f} s"),
                      flush=True)
    print("\n| `tokenlabel demo`, one competing busy process | seconds |\n|---|---|")
    for name, ts in times.items():
        done = [t for t in ts if t is not None]
        shown = (f"{statistics.median(done):.1f}" if len(done) == len(ts)
                 else f"> {args.demo_timeout:.0f}")
        print(f"| {name} | {shown} |")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=2.0,
                    help="seconds of timing per measurement in each worker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-grid", dest="grid", action="store_false")
    ap.add_argument("--demo", action="store_true", help="also time `tokenlabel demo`, loaded")
    ap.add_argument("--demo-rounds", type=int, default=1)
    ap.add_argument("--demo-timeout", type=float, default=900.0)
    ap.add_argument("--demo-before", default=None,
                    help="a folder holding the package before the thread defaults")
    ap.add_argument("--demo-explicit", type=int, default=0,
                    help="also the demo with torch's own settings given as flags (this many "
                         "threads, the wait policy unset); 0: not")
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.threads, args.budget)))
        return
    out: dict = {}
    if args.grid:
        out["grid"] = grid(args)
        table(out["grid"])
    if args.demo:
        out["demo"] = demo(args)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
