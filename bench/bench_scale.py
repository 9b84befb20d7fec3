"""How a whole amortised run's cost grows with the SAE, stage by stage, and what 131k features
would cost.

For each size (d_sae doubling, ``--sizes``), a planted SAE of that many features on a tiny
subject (`toy.scale.build_scale_world`: the subject stays the same, every feature fires on its
concept's words at one position, L0 grows with d_sae as n/230 per word token) and a corpus of
``--tokens`` tokens is labeled whole by ``label_sae_features(..., amortize=AmortizeConfig())``
with the toy evaluator and the default `LabelConfig`, into a run folder; then ``tokenlabel
status``, ``tokenlabel export --neuronpedia`` and ``tokenlabel report`` run on that folder.
Each size runs in a fresh process (so one size's memory does not inflate the next's), and
each command in a fresh process of its own.

Per size and stage it prints the wall time and the CPU time (both exclusive: a stage's time
leaves out the stages it calls; the labeling runs on one thread, so its CPU time is what other
jobs on a shared machine change least, and the growth is projected from it), the peak
resident memory while the stage ran (RSS sampled every 10 ms; for the commands, the
process's peak) and the disk it leaves. It also measures, apart in fresh processes, the two
things the labeling process holds for the whole SAE: every finished result (what
``label_sae_features`` returns) and every feature's selected examples. The stages:

* activation cache (`build_activation_cache`), example selection (`select_examples`),
  example rendering (`prepare_batch`: contexts read, words rendered, prompts prepared), seed
  descents (cold descents: the seed set, and rounds before the first map), map fits
  (`AmortisedRun._fit`), proposals and verification, fall-back descents (warm-started), the
  run store (every read and write of the labeling run), the rest of the driver ("other");
* `status`, export (sidecar, table, Neuronpedia JSONL and batch files), the report.

Then, per stage, the growth exponent b of a least-squares fit t = a n^b over the sizes (log-log),
the projection to 131,072 features (the largest size's time times (131072/n)^b), the stage
that dominates there, and the evaluator's time on a GPU at the measured optimisation steps and
verification passes per feature: the FLOPs of one step from the model of
``bench/bench_labeling.py --shape llama3-8b`` (4 FLOPs per parameter per suffix token plus
attention over the cached prefix; the prompt lengths measured with the Llama-3 tokenizer on
this run's examples), at an assumed share of the GPU's bf16 peak (``--mfu``, ``--peak-tflops``).
The map fits grow faster than linearly only while their training sets do: a bound at 131k
from one fit timed at the `max_train` cap (on this world's inputs, and on 4096-wide ones with
every label its own class) times the fits the refit schedule makes up to 131k's labels.

Last, a store of 131,072 finished rows (this run's largest store's rows, repeated under new
feature indices) gets ``tokenlabel status`` (in a fresh process: wall time, and the SQL
statements it ran) and ``tokenlabel export`` (statements).

    python bench/bench_scale.py --sizes 1024 2048 --tokens 100000     # a quick look
    python bench/bench_scale.py --out bench/scale_cpu.txt             # 1k to 16k, 500k tokens
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("activation cache", "example selection", "example rendering", "seed descents",
          "map fits", "proposals+verification", "fall-back descents", "run store", "other",
          "status", "export", "report")
TARGET = 131_072
EXAMPLES = dict(n_contrast=0)
"""The default `ExampleConfig` but for same-word contrasts. The scale world makes thousands of
distinct features out of the toy evaluator's six concepts by gating each feature to a few
positions of the context, which no label the toy evaluator can read expresses: contrasts (the
feature's words where it is silent: the other positions) rightly show every label as too broad,
every verdict is then `weak`, no proposal passes, and every feature runs every restart (measured
at d_sae 1,024: 280 steps a feature instead of about 20, no amortised label). Without them the
run measured is one whose labels succeed, as on a real SAE with an evaluator that reads them."""
LLAMA3_8B = dict(n_params=8.03e9, n_layers=32, d_model=4096)
"""Llama-3-8B as `bench_labeling.py --shape llama3-8b` builds it (parameters with the
embedding and unembedding, as its FLOP model counts them)."""


# ---------------------------------------------------------------------- measuring
class Stages:
    """Exclusive wall time, calls and peak RSS per stage (a stack of the stages running)."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        """CPU seconds of this process (the labeling is single-threaded): what other jobs on
        a shared machine change least."""
        self.calls: Counter[str] = Counter()
        self.peak_mb: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        threading.Thread(target=self._sample, daemon=True).start()

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            try:
                name = self.stack[-1][0] if self.stack else "other"
            except IndexError:
                name = "other"
            self.peak_mb[name] = max(self.peak_mb[name], self._rss_mb())

    def push(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.stack:
            top = self.stack[-1]
            self.seconds[top[0]] += now - top[1]
            self.cpu[top[0]] += cpu - top[2]
        self.stack.append([name, now, cpu])
        self.peak_mb[name] = max(self.peak_mb[name], self._rss_mb())

    def pop(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        name, start, cpu_start = self.stack.pop()
        self.seconds[name] += now - start
        self.cpu[name] += cpu - cpu_start
        self.calls[name] += 1
        if self.stack:
            self.stack[-1][1], self.stack[-1][2] = now, cpu

    def wrap(self, name: Any, fn: Any) -> Any:
        """`fn`, timed as stage `name` (or `name(*args)` when it is callable)."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.push(name(*args) if callable(name) else name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.pop()
        return timed

    def close(self) -> None:
        self._stop.set()


def instrument(stages: Stages) -> Any:
    """Wrap the pipeline's stage functions (module attributes, as they are looked up);
    returns the executor whose label function times the descents."""
    from saelens_tokenlabel.descent.batch import label_batch
    from saelens_tokenlabel.run import executors, pipeline
    from saelens_tokenlabel.run.amortise import map as amap
    from saelens_tokenlabel.run.amortise import mode, proposals
    from saelens_tokenlabel.run.store import RunStore
    from saelens_tokenlabel.sae import batches

    pipeline.build_activation_cache = stages.wrap("activation cache",
                                                  pipeline.build_activation_cache)
    pipeline.select_examples = stages.wrap("example selection", pipeline.select_examples)
    render = stages.wrap("example rendering", batches.prepare_batch)
    batches.prepare_batch = mode.prepare_batch = proposals.prepare_batch = render
    mode.AmortisedRun._fit = stages.wrap("map fits", mode.AmortisedRun._fit)
    verify = "proposals+verification"
    for mod, name in ((mode, "prepare_verification"), (mode, "finish_verification"),
                      (mode, "feature_inputs"), (executors, "verify_batch")):
        setattr(mod, name, stages.wrap(verify, getattr(mod, name)))
    amap.Amortizer.propose = stages.wrap(verify, amap.Amortizer.propose)
    for name in ("put", "start", "fail", "claim", "renew", "release", "add_features",
                 "set_meta", "bind", "finished", "results", "labelset", "unfinished",
                 "claims"):
        setattr(RunStore, name, stages.wrap("run store", getattr(RunStore, name)))
    descend = stages.wrap(lambda batch, *a: "fall-back descents" if batch.method ==
                          "warm_started" else "seed descents", label_batch)
    return executors.LocalExecutor(label=descend)


def disk_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# ---------------------------------------------------------------------- one size (child)
def label_size(n: int, tokens: int, folder: Path) -> dict[str, Any]:
    """Build the world of `n` features and label it whole, amortised; the figures."""
    import torch

    from saelens_tokenlabel import AmortizeConfig, LabelConfig
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig
    from saelens_tokenlabel.toy import load_toy_evaluator
    from saelens_tokenlabel.toy.scale import ScaleConfig, build_scale_world

    torch.set_num_threads(1)
    t = time.perf_counter()
    world = build_scale_world(folder / "world", ScaleConfig(n_features=n, n_tokens=tokens))
    build_s = time.perf_counter() - t
    evaluator = load_toy_evaluator(device="cpu")
    stages = Stages()
    executor = instrument(stages)
    t = time.perf_counter()
    stages.push("other")
    labels = label_sae_features(
        world.sae, world.subject, evaluator, list(world.corpus), None, LabelConfig(),
        cache=CacheConfig(cache_dir=folder / "cache"), examples=ExampleConfig(**EXAMPLES),
        run_dir=folder / "run",
        amortize=AmortizeConfig(), progress=False, scores=ScoreConfig(scorers=()),
        executor=executor)
    stages.pop()
    wall = time.perf_counter() - t
    stages.close()
    return {"n": n, "build_s": build_s, "label_wall_s": wall,
            "seconds": dict(stages.seconds), "cpu": dict(stages.cpu),
            "peak_mb": dict(stages.peak_mb),
            "calls": dict(stages.calls), "cache_mb": disk_mb(folder / "cache"),
            "store_mb": disk_mb(folder / "run"), **work_of(labels, world)}


def work_of(labels: Any, world: Any) -> dict[str, Any]:
    """What the labels cost the evaluator: steps, candidates scored, examples; and how right
    they are."""
    steps = scored = examples = verified = 0
    methods: Counter[str] = Counter()
    truth = world.truth()
    right = 0
    for f in labels:
        r = labels[f]
        steps += sum(a.steps for a in r.attempts) if r.attempts else r.steps
        proposed = [a for a in r.attempts if a.attempt < 0]
        scored += len(proposed) + (1 if r.method == "amortised" else 0)
        verified += bool(proposed) or r.method == "amortised"
        examples += r.n_examples
        if r.status == "ok":
            methods[r.method] += 1
            right += r.label == truth[f]
    return {"features": len(labels), "steps": steps, "candidates_scored": scored,
            "verified": verified, "examples": examples, "methods": dict(methods),
            "right": right, "by_status": {k: len(v) for k, v in labels.by_status().items()}}


# ---------------------------------------------------------------------- commands (children)
def run_command(argv: list[str], count_sql: bool = False) -> dict[str, Any]:
    """A `tokenlabel` command in a fresh process: its own wall time (imports excluded), its
    peak RSS, and with `count_sql` the SQL statements it ran."""
    code = ("import json, sys, time, resource, sqlite3\n"
            "from saelens_tokenlabel.cli import main\n"
            "n = [0]\n"
            "real = sqlite3.connect\n"
            "def connect(*a, **k):\n"
            "    con = real(*a, **k)\n"
            "    con.set_trace_callback(lambda s: n.__setitem__(0, n[0] + 1))\n"
            "    return con\n"
            f"if {count_sql}: sqlite3.connect = connect\n"
            "import io, contextlib\n"
            "out = io.StringIO()\n"
            "t, c = time.perf_counter(), time.process_time()\n"
            "with contextlib.redirect_stdout(out): rc = main(json.loads(sys.argv[1]))\n"
            "wall, cpu = time.perf_counter() - t, time.process_time() - c\n"
            # VmHWM: this process's own peak. ru_maxrss would also count the parent's, which
            # a child spawned by vfork inherits at exec.
            "try:\n"
            "    hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')]\n"
            "    peak = int(hwm[0].split()[1]) / 1024\n"
            "except (OSError, IndexError):\n"
            "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "print(json.dumps({'rc': rc, 'wall_s': wall, 'cpu_s': cpu, 'sql': n[0], "
            "'peak_mb': peak, 'out': out.getvalue()[-2000:]}))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argv)], env=env,
                          capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    got["process_s"] = time.perf_counter() - t
    return got


def commands(folder: Path) -> dict[str, dict[str, Any]]:
    run = str(folder / "run")
    status = run_command(["status", run], count_sql=True)
    export = run_command(["export", run, "--to", str(folder / "export"), "--neuronpedia"],
                         count_sql=True)
    export["disk_mb"] = disk_mb(folder / "export")
    batches = sorted((folder / "export").rglob("batch-*.jsonl.gz"))
    export["batch_files"] = len(batches)
    export["largest_batch_mb"] = max((unzipped_mb(p) for p in batches), default=0.0)
    report = run_command(["report", run, "--out", str(folder / "report")])
    report["disk_mb"] = disk_mb(folder / "report")
    return {"status": status, "export": export, "report": report}


def unzipped_mb(path: Path) -> float:
    import gzip

    with gzip.open(path, "rb") as fh:
        return len(fh.read()) / 2**20


# ---------------------------------------------------------------------- 131k-row store
def big_store(source: Path, target: Path, n: int) -> None:
    """A store of `n` finished rows: `source`'s rows repeated under new feature indices
    (their results' ``feature`` rewritten), its meta copied; built directly in SQLite."""
    import sqlite3

    from saelens_tokenlabel.run.store import RunStore

    RunStore(target).close()  # the schema
    src = sqlite3.connect(source)
    rows = src.execute("SELECT status, result, attempts, started_at, finished_at, verdict, "
                       "method, polysemantic FROM features WHERE result IS NOT NULL").fetchall()
    meta = src.execute("SELECT key, value FROM meta").fetchall()
    src.close()
    dst = sqlite3.connect(target)
    dst.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta)

    def renamed():
        for f in range(n):
            status, text, *rest = rows[f % len(rows)]
            d = json.loads(text)
            d["feature"] = f
            yield (f, status, json.dumps(d, ensure_ascii=False), *rest)

    dst.executemany("INSERT INTO features(feature, status, result, attempts, started_at, "
                    "finished_at, verdict, method, polysemantic) VALUES (?,?,?,?,?,?,?,?,?)",
                    renamed())
    dst.commit()
    dst.close()


# ---------------------------------------------------------------------- GPU evaluator time
def llama3_prompt(folder: Path, tokenizer_file: Path | None) -> dict[str, float] | None:
    """Prefix and suffix tokens of this run's rating prompts under the Llama-3 tokenizer (a
    tiny random Llama-shaped evaluator with its vocabulary, as bench_labeling.py builds)."""
    if tokenizer_file is None or not tokenizer_file.is_file():
        return None
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_labeling
    import torch

    from saelens_tokenlabel.run.store import load_labelset

    bench_labeling.LLAMA3_TOKENIZER = tokenizer_file
    ev = bench_labeling.build_evaluator("tiny", "llama3", "cpu", torch.float32)
    labels = load_labelset(folder / "run", range(200))
    prefix = []
    for f in labels:
        ex = labels[f].extra.examples or []
        for e in ex[:20]:
            prefix.append(len(ev.encode(e.text, e.word).prefix_ids))
    return {"prefix": sum(prefix) / max(1, len(prefix)), "suffix": len(ev.suffix_ids(1))}


def gpu_seconds(sizes: list[dict[str, Any]], prompt: dict[str, float], args: argparse.Namespace
                ) -> dict[str, Any]:
    """The evaluator's GPU time at 131k features, at the largest size's work per feature."""
    from saelens_tokenlabel import AmortizeConfig, LabelConfig

    last = sizes[-1]
    n = last["features"]
    steps = last["steps"] / n
    descended = (last["methods"].get("descended", 0) + last["methods"].get("warm_started", 0)) / n
    verified, n_ex = last["verified"] / n, last["examples"] / n
    # An accepted proposal's result keeps no rejected rivals: count the candidates scored
    # as the config's (an upper bound while the map knows fewer classes).
    cands = verified * AmortizeConfig().candidates
    m = LLAMA3_8B
    rows = LabelConfig().batch_size  # one feature's rows in a step
    suffix, prefix = prompt["suffix"], prompt["prefix"]
    # bench_labeling.py's model of a step: forward and backward to the inputs, 4 FLOPs per
    # parameter per suffix token, plus attention over the cached prefix.
    step = (4 * m["n_params"] + 8 * m["n_layers"] * m["d_model"] * prefix) * rows * suffix
    # Forward passes (2 FLOPs per parameter per token): a prefix pass over the examples of
    # each feature verified and of each descended (the descent's prefix cache), a rating pass
    # per example and candidate.
    passes = 2 * m["n_params"] * n_ex * ((verified + descended) * prefix + cands * suffix)
    rate = args.mfu * args.peak_tflops * 1e12
    return {"step_flops": step, "step_s": step / rate, "steps_per_feature": steps,
            "candidates_per_feature": cands, "pass_flops_per_feature": passes,
            "gpu_s": TARGET * (steps * step + passes) / rate,
            "descent_gpu_s": TARGET * steps * step / rate, "prefix": prefix, "suffix": suffix,
            "rows": rows, "mfu": args.mfu, "peak_tflops": args.peak_tflops}


# ---------------------------------------------------------------------- fits and the table
def growth(ns: list[int], ts: list[float]) -> tuple[float, float] | None:
    """(b, a) of the least-squares line log t = log a + b log n; None under two points."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(ns, ts, strict=True) if t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else 0.0
    return b, math.exp(my - b * mx)


def stage_rows(size: dict[str, Any]) -> dict[str, tuple[float, float, float, float | None]]:
    """Stage -> (wall seconds, CPU seconds, peak MB, disk MB)."""
    out = {}
    for st in STAGES[:9]:
        disk = {"activation cache": size["cache_mb"], "run store": size["store_mb"]}.get(st)
        out[st] = (size["seconds"].get(st, 0.0), size["cpu"].get(st, 0.0),
                   size["peak_mb"].get(st, 0.0), disk)
    for st in STAGES[9:]:
        c = size["commands"][st]
        out[st] = (c["wall_s"], c["cpu_s"], c["peak_mb"], c.get("disk_mb"))
    return out


def print_tables(sizes: list[dict[str, Any]], big: dict[str, Any] | None,
                 gpu: dict[str, Any] | None, fit: dict[str, Any],
                 args: argparse.Namespace) -> list[str]:
    lines = []
    add = lines.append
    add(f"# python bench/bench_scale.py --sizes {' '.join(map(str, args.sizes))} --tokens "
        f"{args.tokens}   ({os.cpu_count()} CPUs, shared with other jobs; OMP_NUM_THREADS=1)")
    for size in sizes:
        add("")
        add(f"d_sae {size['n']:,}: {size['features']:,} features labeled in "
            f"{size['label_wall_s']:.0f} s (world built in {size['build_s']:.0f} s, not "
            f"counted); {size['steps']:,} optimisation steps ({size['steps'] / size['n']:.1f} "
            f"per feature); methods {size['methods']}; statuses {size['by_status']}; labels "
            f"= planted truth: {size['right']:,}")
        add(f"  {'stage':<24}{'wall s':>10}{'CPU s':>10}{'peak MB':>10}{'disk MB':>10}"
            f"{'calls':>8}")
        for st, (sec, cpu, mb, disk) in stage_rows(size).items():
            calls = size["calls"].get(st, 1 if st in STAGES[9:] else 0)
            add(f"  {st:<24}{sec:>10.2f}{cpu:>10.2f}{mb:>10.0f}"
                f"{'' if disk is None else format(disk, '.1f'):>10}{calls:>8}")
        held = size["held"]
        add(f"  held by the labeling process, measured apart in fresh processes: every "
            f"finished result {held['results_mb']:.0f} MB, every feature's selected examples "
            f"{held['selections_mb']:.0f} MB (let go as each result is kept)")
        ex = size["commands"]["export"]
        add(f"  export: {ex['batch_files']} Neuronpedia batch files, the largest "
            f"{ex['largest_batch_mb']:.2f} MB unzipped; SQL statements: status "
            f"{size['commands']['status']['sql']}, export {ex['sql']}")
    lines += projection(sizes, gpu)
    lines += map_bound(sizes, fit)
    if big is not None:
        add("")
        add(f"a store of {TARGET:,} finished rows ({big['store_mb']:.0f} MB, built in SQLite "
            f"from the largest run's rows): tokenlabel status {big['status']['wall_s']:.2f} s "
            f"in the command ({big['status']['process_s']:.2f} s as a fresh process, "
            f"{big['status']['sql']} SQL statements; {big['small_status_sql']} on the "
            f"largest run's store); tokenlabel export {big['export']['wall_s']:.0f} s, "
            f"{big['export']['sql']} SQL statements ({big['small_export_sql']} on the "
            f"largest run's), peak {big['export']['peak_mb']:.0f} MB, "
            f"{big['export']['batch_files']} batch files, the largest "
            f"{big['export']['largest_batch_mb']:.2f} MB unzipped")
    return lines


def projection(sizes: list[dict[str, Any]], gpu: dict[str, Any] | None) -> list[str]:
    """Per stage: the growth exponents (wall, CPU, peak memory) and the projection of its
    CPU time to 131k features; the dominant stage; the GPU evaluator's time."""
    ns = [s["n"] for s in sizes]
    rows = [stage_rows(s) for s in sizes]
    out = ["", f"growth t = a n^b over d_sae {ns[0]:,}..{ns[-1]:,} (least squares, log-log), "
               f"projected to {TARGET:,} features from the largest size's CPU time",
           f"  {'stage':<24}{'b wall':>8}{'b CPU':>8}{'b peak':>8}{'CPU s at 131k':>15}"
           f"{'share':>8}"]
    proj = {}
    for st in STAGES:
        b = [growth(ns, [r[st][k] for r in rows]) for k in (0, 1, 2)]
        cpu = rows[-1][st][1]
        proj[st] = (cpu * (TARGET / ns[-1]) ** b[1][0] if b[1] else float("nan"),
                    *(x[0] if x else float("nan") for x in b))
    total = sum(v[0] for v in proj.values() if math.isfinite(v[0]))
    for st, (t, bw, bc, bm) in proj.items():
        out.append(f"  {st:<24}{bw:>8.2f}{bc:>8.2f}{bm:>8.2f}{t:>15,.0f}{t / total:>8.1%}")
    top = max(proj, key=lambda k: proj[k][0] if math.isfinite(proj[k][0]) else -1)
    out.append(f"  at {TARGET:,} features: {total / 3600:.1f} CPU-hours on this machine's "
               f"core in all; {top} dominates ({proj[top][0] / total:.0%})")
    if gpu is not None:
        out.append(
            f"  GPU evaluator at {TARGET:,} features (Llama-3-8B, {gpu['steps_per_feature']:.1f} "
            f"optimisation steps and {gpu['candidates_per_feature']:.2f} candidates scored per "
            f"feature, as measured at {ns[-1]:,}): one feature-step ({gpu['rows']} rows x "
            f"{gpu['suffix']} suffix tokens over a {gpu['prefix']:.0f}-token prefix) = "
            f"{gpu['step_flops'] / 1e12:.2f} TFLOP = {gpu['step_s'] * 1e3:.2f} ms at an "
            f"assumed {gpu['mfu']:.0%} of {gpu['peak_tflops']:.0f} TFLOP/s (bf16 peak); "
            f"the optimisation steps {gpu['descent_gpu_s'] / 3600:.1f} GPU-h, with the "
            f"forward passes over the examples (verification, descents' prefixes) "
            f"{gpu['gpu_s'] / 3600:.1f} GPU-h ({gpu['gpu_s'] / 3600 / 8:.1f} h on 8 GPUs)")
    return out


def map_bound(sizes: list[dict[str, Any]], fit: dict[str, Any]) -> list[str]:
    """Why the map fits' exponent says little about 131k: each fit grows with its training
    set until the cap, past which only the count of fits grows (log n)."""
    train = ", ".join(f"{s['map']['train']:,}" for s in sizes)
    fits = fit["fits_at_target"]
    return [f"  map fits: a fit's cost grows with its training labels (the last fit's, by size: "
            f"{train}) up to max_train = {fit['rows']:,} (cross-validation on at most "
            f"{fit['cv_max']:,}), then only the count of fits grows. At {TARGET:,} features "
            f"({fit['labels_at_target']:,} trustworthy labels at the largest size's share) the "
            f"refit schedule fits at most {fits} maps. One fit at the cap took "
            f"{fit['cpu_s']:.2f} CPU s here ({fit['width']}-wide inputs, {fit['classes']} "
            f"classes): at most {fits * fit['cpu_s']:,.0f} CPU s; on 4096-wide inputs with "
            f"every label its own class {fit['worst_cpu_s']:.1f} CPU s: at most "
            f"{fits * fit['worst_cpu_s'] / 3600:.2f} CPU-h"]


# ---------------------------------------------------------------------- main
def child(args: argparse.Namespace) -> None:
    folder = Path(args.child_dir)
    figs = label_size(args.child, args.tokens, folder)
    Path(args.child_json).write_text(json.dumps(figs))


def one_size(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Label size `n` in a fresh process (or, with --reuse, read what an earlier run of this
    script left in --work), then run the commands on its run folder."""
    out = folder / "figures.json"
    if not (args.reuse and out.is_file()):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--child", str(n), "--tokens",
                        str(args.tokens), "--child-dir", str(folder), "--child-json", str(out)],
                       env=env, check=True)
    figs = json.loads(out.read_text())
    figs.setdefault("map", map_figures(folder))  # (absent from runs of before it was read)
    if "held" not in figs:
        figs["held"] = held_figures(folder)
        out.write_text(json.dumps(figs))
    if args.labels_only:
        return figs
    done = folder / "commands.json"
    if args.reuse and done.is_file():
        figs["commands"] = json.loads(done.read_text())
        return figs
    for old in ("export", "report"):
        shutil.rmtree(folder / old, ignore_errors=True)
    figs["commands"] = commands(folder)
    done.write_text(json.dumps(figs["commands"]))
    return figs


def map_figures(folder: Path) -> dict[str, Any]:
    """The run's last map (its ``amortizer.json``): training labels, classes, method, cap."""
    meta = json.loads((folder / "run" / "amortizer" / "amortizer.json").read_text())
    return {"train": meta["n_train"], "classes": len(meta["classes"]),
            "method": meta["method"], "max_train": meta["config"]["max_train"]}


def capped_fit(largest: Path, n: int, tokens: int) -> dict[str, Any]:
    """Map fits at the cap, on one thread: the largest run's last training labels cycled to
    `max_train` rows (a fit's cost depends on its rows, the inputs' width and the classes, not
    on which label goes with which row), (a) over as many of the world's features' inputs, and
    (b) over random inputs of Llama-3-8B's width (4096) with every row its own class, the
    worst a real SAE could ask. Also how many fits the refit schedule makes while the
    trustworthy labels grow to the largest run's share of 131k features (counted at every
    label: an upper bound)."""
    import dataclasses

    import torch

    from saelens_tokenlabel.run import load_labelset
    from saelens_tokenlabel.run.amortise.config import AmortizeConfig
    from saelens_tokenlabel.run.amortise.map import CV_MAX, Amortizer
    from saelens_tokenlabel.run.amortise.proposals import feature_inputs
    from saelens_tokenlabel.toy.scale import ScaleConfig, build_scale_world

    torch.set_num_threads(1)
    meta = json.loads((largest / "run" / "amortizer" / "amortizer.json").read_text())
    config = AmortizeConfig.from_dict(meta["config"])
    labels = load_labelset(largest / "run")
    train = [labels[f] for f in meta["features"]]
    rows = [train[i % len(train)] for i in range(config.max_train)]
    world = build_scale_world(largest / "world", ScaleConfig(n_features=n, n_tokens=tokens))

    def timed(x: Any, results: list[Any]) -> float:
        t = time.process_time()
        Amortizer.fit(x, results, config)
        return time.process_time() - t

    here = timed(feature_inputs(world.sae, list(range(config.max_train)), config.inputs), rows)
    # Two-token labels: each its own class with a one-hot target.
    distinct = [dataclasses.replace(r, label_token_ids=[i, i]) for i, r in enumerate(rows)]
    wide = torch.randn(config.max_train, 4096, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    worst = timed(torch.nn.functional.normalize(wide, dim=-1), distinct)
    at_target = math.ceil(meta["n_train"] * TARGET / n)
    last, fits = None, 0
    for k in range(at_target + 1):
        if config.refits(k, last):
            fits, last = fits + 1, k
    return {"rows": config.max_train, "cv_max": CV_MAX, "classes": len(meta["classes"]),
            "width": int(world.sae.cfg.d_in), "cpu_s": here, "worst_cpu_s": worst,
            "labels_at_target": at_target, "fits_at_target": fits}


def held_child(what: str, folder: Path) -> float:
    """(In a fresh process.) MB of resident memory that the labeling process holds for the
    whole run folder `folder`: every finished result as `label_sae_features` returns them
    (``results``), or every feature's selected examples (``selections``)."""
    import gc

    import torch

    from saelens_tokenlabel.run import RunStore, load_labelset
    from saelens_tokenlabel.sae import ExampleConfig
    from saelens_tokenlabel.sae.cache import ActivationCache
    from saelens_tokenlabel.sae.examples import select_examples

    def rss_mb() -> float:
        line = [x for x in open("/proc/self/status") if x.startswith("VmRSS")][0]
        return int(line.split()[1]) / 1024

    torch.set_num_threads(1)
    with RunStore(folder / "run", create=False) as store:
        info = store.get_meta("info")
    gc.collect()
    base = rss_mb()
    if what == "results":
        held: Any = load_labelset(folder / "run")
    else:
        cache = ActivationCache.open(info["activation_cache"])
        held = select_examples(cache, range(int(cache.meta["d_sae"])),
                               ExampleConfig(**EXAMPLES), False)
    gc.collect()
    mb = rss_mb() - base
    del held  # (held until measured)
    return mb


def held_figures(folder: Path) -> dict[str, float]:
    """`held_child` of both kinds, each in a process of its own."""
    out = {}
    for what in ("results", "selections"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, __file__, "--held", what, "--child-dir",
                               str(folder)], env=env, capture_output=True, text=True,
                              check=True)
        out[f"{what}_mb"] = float(proc.stdout.strip().splitlines()[-1])
    return out


def big_figures(largest: Path, tmp: Path) -> dict[str, Any]:
    target = tmp / "big"
    for old in (target, tmp / "big_export"):
        shutil.rmtree(old, ignore_errors=True)
    big_store(largest / "run" / "run.sqlite", target / "run.sqlite", TARGET)
    status = run_command(["status", str(target)], count_sql=True)
    export = run_command(["export", str(target), "--to", str(tmp / "big_export"),
                          "--neuronpedia"], count_sql=True)
    batches = sorted((tmp / "big_export").rglob("batch-*.jsonl.gz"))
    export["batch_files"] = len(batches)
    export["largest_batch_mb"] = max((unzipped_mb(p) for p in batches), default=0.0)
    return {"store_mb": disk_mb(target), "status": status, "export": export}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--tokens", type=int, default=500_000)
    ap.add_argument("--mfu", type=float, default=0.4,
                    help="assumed share of the GPU's bf16 peak reached by the step")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--llama3-tokenizer", type=Path, default=next(
        (p for p in (ROOT.parent / "shared" / "llama3_tokenizer" / "tokenizer.json",
                     ROOT.parents[1] / "shared" / "llama3_tokenizer" / "tokenizer.json")
         if p.is_file()), None))
    ap.add_argument("--no-big", action="store_true", help="skip the 131k-row store")
    ap.add_argument("--work", type=Path, help="keep the run folders here (default: a "
                    "temporary folder, removed at the end)")
    ap.add_argument("--reuse", action="store_true", help="with --work: take the figures of a "
                    "size (labeling, and the commands when they ran) from an earlier run there")
    ap.add_argument("--labels-only", action="store_true",
                    help="only label the sizes (into --work), no commands and no tables")
    ap.add_argument("--out", type=Path, help="also write the tables to this file")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--held", choices=("results", "selections"), help=argparse.SUPPRESS)
    ap.add_argument("--child-dir", help=argparse.SUPPRESS)
    ap.add_argument("--child-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args)
        return
    if args.held is not None:
        print(held_child(args.held, Path(args.child_dir)))
        return
    tmp = args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        sizes = []
        for n in sorted(args.sizes):
            sizes.append(one_size(n, args, tmp / str(n)))
            print(f"d_sae {n}: labeled in {sizes[-1]['label_wall_s']:.0f} s", flush=True)
        if args.labels_only:
            return
        largest = tmp / str(sorted(args.sizes)[-1])
        prompt = llama3_prompt(largest, args.llama3_tokenizer)
        gpu = gpu_seconds(sizes, prompt, args) if prompt is not None else None
        fit = capped_fit(largest, sorted(args.sizes)[-1], args.tokens)
        big = None
        if not args.no_big:
            big = big_figures(largest, tmp)
            big["small_status_sql"] = sizes[-1]["commands"]["status"]["sql"]
            big["small_export_sql"] = sizes[-1]["commands"]["export"]["sql"]
        lines = print_tables(sizes, big, gpu, fit, args)
        print("\n".join(lines))
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")
            saved = {"sizes": sizes, "big": big, "gpu": gpu, "capped_fit": fit}
            args.out.with_suffix(".json").write_text(
                json.dumps(saved, indent=1, default=str) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
