#!/usr/bin/env python
"""Specific labels by default: `LabelConfig()` of this checkout against `LabelConfig()` of an
earlier commit, on the toy concepts, the hierarchy cases and a noisy feature.

Both runs label the same feature data (built here, with this checkout's toy world) with the
same toy evaluator (this checkout's weights), each with its own code's default config and
seeds 0 and 1. The earlier code runs in a subprocess from a git worktree of ``--before``
(default: the commit before the specific-labels work), so only the labeling code differs.

The hierarchy cases reproduce the paper's failure (§3.2): a feature fires on a subset's
members ("mammal" ⊂ "animal", "digit" ⊂ "number"), the parent's other members are rare in the
text (5 of about 800 words), and the evaluator's prior at the label slot favours the parent
(its unembedding bias for the parent's token raised by ``--prior``, as a large LLM favours the
common word).

It prints one row per feature and seed (label, steps, attempts) for both runs, then per run:
the number of correct labels, the median and 90th percentile of steps per feature, and the
steps of the features that needed no refinement (no fixable errors), whose cost should not
change. Run from the repository root::

    python bench/bench_specific_labels.py            # about 4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "7412040"
"""The last commit before the specific-labels work (issue 14)."""


# ------------------------------------------------------------------ worker (both versions)
def _worker(cases_path: Path, evaluator_dir: Path) -> None:
    """Label every case with this interpreter's `saelens_tokenlabel` (old or new) and its
    default `LabelConfig()`; one JSON line per case. Only API both versions have."""
    import torch

    from saelens_tokenlabel import Evaluator, FeatureData, LabelConfig, label_feature
    from saelens_tokenlabel.evaluator.loading import load_local_model

    torch.set_num_threads(1)
    cases = json.loads(cases_path.read_text())
    models = {}
    for case in cases:
        key = json.dumps(case["prior"], sort_keys=True)
        if key not in models:
            model = load_local_model(evaluator_dir, device="cpu", dtype=torch.float32)
            for word, bias in case["prior"].items():
                (tid,) = model.tokenizer(word, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    model.b_U[tid] += bias
            models[key] = Evaluator(model)
        data = FeatureData.from_sentences([[tuple(t) for t in s] for s in case["sentences"]],
                                          name=case["name"])
        t0 = time.perf_counter()
        r = label_feature(data, models[key], LabelConfig(seed=case["seed"]))
        print(json.dumps({
            "name": case["name"], "seed": case["seed"], "label": r.label,
            "steps": int(r.metrics.get("steps_total", r.steps)),
            "attempts": [a["label"] + ("*" if a.get("overrides", {}).get("refined") else "")
                         for a in r.attempts],
            "first_fixable": r.attempts[0].get("metrics", {}).get("train_fixable_errors"),
            "polysemantic": getattr(r, "polysemantic", None) is not None,
            "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


# ------------------------------------------------------------------ cases (this checkout)
def build_cases(prior: float, seeds: list[int]) -> list[dict]:
    from saelens_tokenlabel.toy import (
        CONCEPTS,
        SUBSETS,
        concept_feature,
        noisy_feature,
        subset_feature,
    )

    feats = [(c, concept_feature(c), c, {}) for c in CONCEPTS]
    for sub, parent in SUBSETS.items():
        feats.append((f"{sub}-only (prior +{prior:g} {parent})", subset_feature(sub), sub,
                      {parent: prior}))
    feats.append(("noisy-color (80% + 2%)", noisy_feature("color", 0.8, 0.02), "color", {}))
    return [{"name": name, "sentences": data.sentences, "expected": want, "prior": pr,
             "seed": s} for name, data, want, pr in feats for s in seeds]


def run(pythonpath: Path, cases: list[dict], evaluator_dir: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases))
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, "--worker", str(path),
                              "--evaluator-dir", str(evaluator_dir)], env=env, cwd=tmp,
                             capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _p90(xs: list[int]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]


def report(cases: list[dict], before: list[dict], after: list[dict]) -> None:
    print(f"{'feature':<34} {'seed':>4}  {'before':<10} {'steps':>5}  {'after':<10} "
          f"{'steps':>5}  after's attempts (* refinement)")
    def mark(r: dict, c: dict) -> str:
        return r["label"] + ("" if r["label"] == c["expected"] else " x")

    for c, b, a in zip(cases, before, after, strict=True):
        print(f"{c['name']:<34} {c['seed']:>4}  {mark(b, c):<10} {b['steps']:>5}  {mark(a, c):<10} "
              f"{a['steps']:>5}  {' → '.join(a['attempts'])}"
              + ("  [polysemantic]" if a["polysemantic"] else ""))
    print()
    plain = [i for i, a in enumerate(after) if not a["first_fixable"]]
    for name, rs in (("before", before), ("after", after)):
        steps = [r["steps"] for r in rs]
        ok = sum(r["label"] == c["expected"] for r, c in zip(rs, cases, strict=True))
        print(f"{name:>6}: {ok}/{len(rs)} correct; steps per feature median "
              f"{statistics.median(steps):g}, p90 {_p90(steps):g}, total {sum(steps)}; "
              f"features without fixable errors: {sum(rs[i]['steps'] for i in plain)} steps "
              f"({len(plain)} runs); {sum(r['seconds'] for r in rs):.0f} s")
    b_plain = sum(before[i]["steps"] for i in plain)
    a_plain = sum(after[i]["steps"] for i in plain)
    print(f"features without fixable errors cost {a_plain / b_plain:.3f}x the steps of before")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git ref of the earlier code")
    ap.add_argument("--prior", type=float, default=2.0,
                    help="logit bias for the parent's token in the hierarchy cases")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--evaluator-dir", type=Path,
                    default=ROOT / "saelens_tokenlabel" / "data" / "toy_evaluator")
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.evaluator_dir)
        return
    sys.path.insert(0, str(ROOT))
    cases = build_cases(args.prior, args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), args.before], check=True)
        try:
            before = run(tree, cases, args.evaluator_dir)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=False)
    after = run(ROOT, cases, args.evaluator_dir)
    print(f"LabelConfig() at {args.before} (before) and at this checkout (after); toy "
          f"evaluator of this checkout; hierarchy prior +{args.prior:g}\n")
    report(cases, before, after)


if __name__ == "__main__":
    main()
