"""Wall time of the read-only `tokenlabel` commands, each in a fresh interpreter.

Measures ``tokenlabel --help`` and ``tokenlabel status DIR`` (DIR: a run store this script
creates, with a few finished fake results and some pending features), each run ``--repeat``
times as a new process, and prints the median and the range; also the bare interpreter
start-up (``python -c pass``) and ``import saelens_tokenlabel``, and the package's own import
time from ``python -X importtime``. Target: under 1.5 s each on a 2-core machine. The
commands run as ``python -m saelens_tokenlabel.cli`` (the `tokenlabel` script's entry point),
so the package on ``PYTHONPATH`` is the one measured.

    python bench/bench_cli.py [--repeat 7] [--json bench/cli.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "transformer_lens", "sae_lens")


def make_run(folder: Path, finished: int = 5, pending: int = 3) -> Path:
    """A run store with `finished` fake results and `pending` features not started."""
    from saelens_tokenlabel.records.result import LabelResult, Trajectory
    from saelens_tokenlabel.run import RunStore

    with RunStore(folder) as store:
        store.set_meta(info={"hook_name": "blocks.0.hook_resid_pre", "model_name": "bench",
                             "d_sae": finished + pending, "evaluator": "toy"})
        store.add_features(range(finished + pending))
        store.put([LabelResult(label=f"word{i}", label_tokens=[f"word{i}"],
                               label_token_ids=[i], probability=0.9, converged=True, steps=40,
                               metrics={"heldout_balanced_accuracy": 0.95},
                               trajectory=Trajectory(), feature=i) for i in range(finished)])
    return folder


def wall(argv: list[str], repeat: int) -> list[float]:
    """Seconds per fresh process running `argv` (output discarded; a failure stops)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def package_import_s() -> float:
    """Cumulative import time of `saelens_tokenlabel` from ``python -X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import saelens_tokenlabel"], capture_output=True, text=True,
                          check=True)
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*saelens_tokenlabel$", line)
        if m:
            return int(m.group(1)) / 1e6
    raise RuntimeError("saelens_tokenlabel not in the -X importtime output")


def heavy_modules(argv: list[str]) -> list[str]:
    """The heavy packages (torch, TransformerLens, SAELens) `tokenlabel ARGV` imports."""
    code = ("import contextlib, io, json, sys\nfrom saelens_tokenlabel.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(sys.argv[1:])\n    except SystemExit:\n        pass\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="fresh processes per command")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "saelens_tokenlabel.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import saelens_tokenlabel": [sys.executable, "-c", "import saelens_tokenlabel"],
            "tokenlabel --help": [*cli, "--help"],
            "tokenlabel status DIR": [*cli, "status", str(run)],
        }
        wall(cases["tokenlabel --help"], 1)  # warm the file cache and .pyc files
        figures = {}
        for name, argv in cases.items():
            t = wall(argv, args.repeat)
            figures[name] = {"median_s": round(statistics.median(t), 3),
                             "min_s": round(min(t), 3), "max_s": round(max(t), 3)}
        heavy = {"--help": heavy_modules(["--help"]),
                 "status": heavy_modules(["status", str(run)])}
    figures["package import (-X importtime)"] = {"median_s": round(package_import_s(), 3)}
    print(f"{'command':34s} {'median':>8s} {'min':>8s} {'max':>8s}   ({args.repeat} fresh "
          "processes each)")
    for name, f in figures.items():
        rng = (f"{f['min_s']:8.3f} {f['max_s']:8.3f}" if "min_s" in f else "")
        print(f"{name:34s} {f['median_s']:8.3f} {rng}")
    print(f"heavy packages imported: --help {heavy['--help']}, status {heavy['status']}")
    target = 1.5
    ok = all(figures[k]["median_s"] < target for k in ("tokenlabel --help",
                                                        "tokenlabel status DIR"))
    print(f"target < {target} s: {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "heavy": heavy}, indent=1) + "\n")


if __name__ == "__main__":
    main()
