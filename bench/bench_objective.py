#!/usr/bin/env python
"""The default objective before and after issue 21 (item 4): does attempt 0 converge?

The regulariser of the paper's loss is λ_ent·H(p) + λ_kl·KL(p‖q) = (λ_ent − λ_kl)·H(p) −
λ_kl·Σ p log q. With the defaults before (λ_ent = λ_kl = 0.2) the entropy term cancels the
−H(p) inside the KL and what is left is linear in p: a mixture of the right label and a word
the evaluator's prior favours can cost less than the right label alone, and attempt 0 sits
in it until `max_attempt_steps`. This bench labels many cases with both configs, in one run,
with the same code and evaluators. It prints the loss along the edge from "meat" to "animal"
on the context world's meat feature (`edge_losses`: the mixture's pull, exactly), then per case
and in total:

* the steps attempt 0 ran and whether it converged (its steps include the
  `convergence_patience` steps that confirm convergence);
* the share of first attempts that converge, and that converge on the right label;
* the steps of all attempts together (restarts and refinements included);
* the number of correct labels.

``before`` passes the earlier defaults explicitly (`BEFORE`), so the comparison keeps its
meaning after the defaults change; ``after`` is this checkout's `LabelConfig()`. More
configs can be compared with ``--config NAME=JSON`` (overrides of `LabelConfig()`).

The cases (nothing is tuned on one of them):

* every toy concept (`toy.all_concepts`; "vehicle" with ``label_length=2``), the paper's
  synthetic datasets the toy evaluator knows, a noisy and a union (polysemantic) feature;
* hierarchy cases: a subset's feature (`toy.subset_feature`) with the evaluator's prior
  favouring the parent by 2 and by 3 nats, and the reverse (a parent's feature with the
  prior favouring the subset by 3 nats);
* the context world (`toy.context`): livestock, meat and animal features with same-word
  contrasts, with the context evaluator's prior favouring "animal" by 3 nats and without a
  prior.

A union feature is correct when the result flags it polysemantic with its two concepts.
Run from the repository root (single-threaded; 6 to 12 minutes per config on one shared
core)::

    OMP_NUM_THREADS=1 python bench/bench_objective.py [--out bench/objective_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

BEFORE: dict[str, Any] = {
    "lambda_ent": 0.2, "lambda_kl": 0.2, "lr": 0.03, "entropy_warmup": 0.0,
    "temperature_final": 0.1, "temperature_steps": 200, "max_attempt_steps": 500,
    "restarts": (
        {"sampler": "confusion", "lr": 0.1, "lambda_ent": 0.3, "lambda_kl": 0.1, "seed": 1},
        {"lr": 0.2, "lambda_ent": 0.3, "lambda_kl": 0.1, "entropy_warmup": 0.3, "seed": 2},
    ),
    "refine_overrides": {"sampler": "confusion", "lr": 0.1, "lambda_kl": 0.1, "lambda_ent": 0.3},
}
"""The objective's defaults before issue 21 (commit d80b7bb), every knob of the objective
and its schedules given, so that ``before`` means the same whatever the defaults become."""


@dataclass(frozen=True)
class Case:
    """One feature to label: its data, the evaluator, the label that is right."""

    name: str
    group: str
    data: Callable[[], Any]
    """Builds the `FeatureData` (called once, shared by every config and seed)."""
    evaluator: str
    """Key of `evaluators`."""
    expected: str
    """The right label; for a union feature "a|b", the two labels of the polysemantic flag."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """Config fields the case needs whatever the config (``label_length`` for "vehicle")."""


def evaluators() -> dict[str, Callable[[], Any]]:
    """Evaluator builders by key: the toy evaluator with and without label priors, and the
    context-reading evaluator with its default prior ("animal" +3 nats) and without one."""
    from saelens_tokenlabel.toy import load_toy_evaluator
    from saelens_tokenlabel.toy.context import context_evaluator

    out: dict[str, Callable[[], Any]] = {"toy": load_toy_evaluator,
                                         "ctx+animal3": context_evaluator,
                                         "ctx": lambda: context_evaluator(prior=None)}
    for word in ("animal", "number", "mammal", "digit"):
        for nats in (2.0, 3.0):
            out[f"toy+{word}{nats:g}"] = (
                lambda w=word, b=nats: load_toy_evaluator(label_prior={w: b}))
    return out


def toy_cases() -> list[Case]:
    """The planted concepts, the paper's synthetic datasets, a noisy and a union feature."""
    from saelens_tokenlabel import FeatureData
    from saelens_tokenlabel.toy import (
        CONCEPTS,
        TWO_TOKEN_CONCEPTS,
        concept_feature,
        noisy_feature,
        union_feature,
    )

    cases = [Case(c, "concept", lambda c=c: concept_feature(c), "toy", c) for c in CONCEPTS]
    cases += [Case(c, "concept", lambda c=c: concept_feature(c), "toy", c,
                   (("label_length", 2),)) for c in TWO_TOKEN_CONCEPTS]
    synthetic = {"animals": "animal", "mammals": "mammal", "numbers": "number",
                 "mammal_text": "mammal"}
    cases += [Case(f"synthetic {s}", "synthetic", lambda s=s: FeatureData.synthetic(s), "toy",
                   want) for s, want in synthetic.items()]
    cases += [Case(f"noisy {c} (80% + 2%)", "noisy", lambda c=c: noisy_feature(c, 0.8, 0.02),
                   "toy", c) for c in ("color", "number")]
    cases.append(Case("union color|food", "union", lambda: union_feature("color", "food"),
                      "toy", "color|food"))
    return cases


def hierarchy_cases() -> list[Case]:
    """A subset's feature with the prior favouring the parent (2 and 3 nats); a parent's
    feature with the prior favouring the subset (3 nats)."""
    from saelens_tokenlabel.toy import SUBSETS, concept_feature, subset_feature

    cases = [Case(f"{sub}-only, prior +{nats:g} {parent}", "hierarchy",
                  lambda s=sub: subset_feature(s), f"toy+{parent}{nats:g}", sub)
             for nats in (2.0, 3.0) for sub, parent in SUBSETS.items()]
    cases += [Case(f"{parent}, prior +3 {sub}", "hierarchy",
                   lambda p=parent: concept_feature(p), f"toy+{sub}3", parent)
              for sub, parent in SUBSETS.items()]
    return cases


def context_cases(tmp: Path) -> list[Case]:
    """The context world's features, with same-word contrasts, under the context evaluator
    with its "animal" prior (+3 nats) and without a prior."""
    from saelens_tokenlabel import FeatureData
    from saelens_tokenlabel.toy.context import (
        ANIMAL_FEATURE,
        LIVESTOCK_FEATURE,
        MEAT_FEATURE,
        context_world,
    )

    world = context_world(tmp)
    cases = []
    for key, prior in (("ctx+animal3", "prior +3 animal"), ("ctx", "no prior")):
        for f in (LIVESTOCK_FEATURE, MEAT_FEATURE, ANIMAL_FEATURE):
            want = world.labels[f]
            assert want is not None
            cases.append(Case(f"context {want}, {prior}", "context",
                              lambda f=f: FeatureData.from_examples(
                                  world.examples(f, contrasts=True)), key, want))
    return cases


def label_run(data: Any, evaluator: Any, config: Any, case: Case) -> dict[str, Any]:
    """Label one case under one config; what the report reads."""
    from saelens_tokenlabel import label_feature

    t0 = time.perf_counter()
    r = label_feature(data, evaluator, config)
    first = r.attempts[0]
    poly = r.polysemantic
    if "|" in case.expected:
        right = poly is not None and set(poly.labels) == set(case.expected.split("|"))
        first_right = first.label in case.expected.split("|")
    else:
        right, first_right = r.label == case.expected, first.label == case.expected
    return {
        "label": r.label, "right": right, "steps_total": int(r.metrics["steps_total"]),
        "attempts": [a.label + ("*" if a.overrides.get("refined") else "")
                     for a in r.attempts],
        "first_label": first.label, "first_converged": first.converged,
        "first_right": bool(first.converged and first_right), "first_steps": first.steps,
        "first_converged_step": first.converged_step,
        "first_probability": round(first.probability, 3),
        "polysemantic": None if poly is None else list(poly.labels),
        "seconds": round(time.perf_counter() - t0, 2)}


def run_all(cases: list[Case], configs: dict[str, dict[str, Any]], seeds: list[int]
            ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """config -> case -> one record per seed. Data and evaluators are built once."""
    import torch

    from saelens_tokenlabel import LabelConfig

    torch.set_num_threads(1)
    builders, built = evaluators(), {}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in configs}
    for case in cases:
        data = case.data()
        if case.evaluator not in built:
            built[case.evaluator] = builders[case.evaluator]()
        for name, overrides in configs.items():
            rows = out[name].setdefault(case.name, [])
            for seed in seeds:
                config = LabelConfig(**{**overrides, **dict(case.overrides), "seed": seed})
                rows.append(label_run(data, built[case.evaluator], config, case))
                print(f"  {case.name} [{name}] seed {seed}: {rows[-1]['label']} "
                      f"({rows[-1]['steps_total']} steps)", file=sys.stderr, flush=True)
    return out


EDGE_SHARES = (1.0, 0.9, 0.8, 0.65, 0.5)
"""Shares of "meat" in the soft labels of `edge_losses` (the rest is "animal")."""


def edge_losses(tmp: Path, configs: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """The loss the descent minimises (`descent.step`, T = 1) over every training example of
    the context world's meat feature, at soft labels mixing "meat" with "animal" (the word
    the evaluator's prior favours by 3 nats), per config; float64, exact."""
    import torch

    from saelens_tokenlabel import FeatureData, LabelConfig
    from saelens_tokenlabel.descent import Batch, StepContext, step
    from saelens_tokenlabel.descent.labeler import feature_jobs
    from saelens_tokenlabel.toy.context import MEAT_FEATURE, context_evaluator, context_world

    ev = context_evaluator(dtype=torch.float64)
    data = FeatureData.from_examples(context_world(tmp).examples(MEAT_FEATURE))
    meat, animal = (ev.tokenizer.convert_tokens_to_ids(w) for w in ("meat", "animal"))
    out = {}
    for name, overrides in configs.items():
        config = LabelConfig(**overrides)
        encoded, (job,) = feature_jobs([data.prepare(config)], ev, config)
        ctx = StepContext.build(ev, encoded, config.performance, ev.label_vocab(config))
        n = len(job.example_ids)
        batch = Batch(job.example_ids, torch.zeros(n, dtype=torch.long), job.targets.double(),
                      [0])
        out[name] = []
        for share in EDGE_SHARES:
            v = torch.full((1, 1, ev.d_vocab), -1e4, dtype=torch.float64)  # p = 0 elsewhere
            v[0, 0, meat], v[0, 0, animal] = math.log(share), math.log(max(1 - share, 1e-300))
            out[name].append(float(step(ctx, v.requires_grad_(True), batch, config).total[0]))
    return out


def _first_steps(r: dict[str, Any]) -> str:
    # Attempt 0's steps; "!" marks one that did not converge, "x" one that converged on a
    # wrong label.
    return f"{r['first_steps']}" + ("" if r["first_right"] else
                                    "x" if r["first_converged"] else "!")


def report(cases: list[Case], results: dict[str, dict[str, list[dict[str, Any]]]],
           seeds: list[int]) -> None:
    """Per case: each config's correct count, first attempts converged, attempt 0's steps per
    seed, total steps, labels; then the totals per config and per group."""
    n = len(seeds)
    print(f"{'case':<34} {'config':<8} {'right':>5} {'a0 conv':>7}  "
          f"{'attempt 0 steps per seed':<24} {'total':>6}  labels")
    for case in cases:
        for name, per_case in results.items():
            rs = per_case[case.name]
            a0 = " ".join(f"{_first_steps(r):>5}" for r in rs)
            labels = " ".join(r["label"] + ("" if r["right"] else "(x)") for r in rs)
            print(f"{case.name:<34} {name:<8} {sum(r['right'] for r in rs):>3}/{n} "
                  f"{sum(r['first_converged'] for r in rs):>5}/{n}  {a0:<24} "
                  f"{sum(r['steps_total'] for r in rs):>6}  {labels}")
        print()
    print("attempt 0 steps: '!' not converged (ran to max_attempt_steps), 'x' converged on a "
          "wrong label\n")
    groups = list(dict.fromkeys(c.group for c in cases))
    for name, per_case in results.items():
        _totals(name, [r for c in cases for r in per_case[c.name]])
        for g in groups:
            _totals(f"  {g}", [r for c in cases if c.group == g for r in per_case[c.name]])


def _totals(name: str, rs: list[dict[str, Any]]) -> None:
    n = len(rs)
    conv = sum(r["first_converged"] for r in rs)
    first = sum(r["first_steps"] for r in rs)
    print(f"{name:<12} {sum(r['right'] for r in rs):>3}/{n} correct; first attempts "
          f"converged {conv}/{n} ({conv / n:.0%}), on the right label "
          f"{sum(r['first_right'] for r in rs)}/{n}; attempt 0 steps {first} "
          f"(mean {first / n:.0f}); all attempts {sum(r['steps_total'] for r in rs)} steps; "
          f"{sum(r['seconds'] for r in rs):.0f} s")


def compare(cases: list[Case], results: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    """Each config against the first (``before``): the cases whose correct count or whose
    converged first attempts went down."""
    base, *others = results
    for name in others:
        for key, what in (("right", "correct labels"), ("first_converged",
                                                        "converged first attempts")):
            fell = [f"{c.name} ({sum(r[key] for r in results[base][c.name])} -> "
                    f"{sum(r[key] for r in results[name][c.name])})" for c in cases
                    if sum(r[key] for r in results[name][c.name])
                    < sum(r[key] for r in results[base][c.name])]
            print(f"{name} vs {base}, cases with fewer {what}: {'; '.join(fell) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3])
    ap.add_argument("--config", action="append", default=[], metavar="NAME=JSON",
                    help="another config to compare: overrides of LabelConfig()")
    ap.add_argument("--only", nargs="*", default=None, metavar="CONFIG",
                    help="run only these configs (before, after, or --config names)")
    ap.add_argument("--cases", nargs="*", default=[""], metavar="TEXT",
                    help="run only the cases whose name contains one of these")
    ap.add_argument("--out", type=Path, help="also write every run's record as JSON")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    configs: dict[str, dict[str, Any]] = {"before": BEFORE, "after": {}}
    for spec in args.config:
        name, _, overrides = spec.partition("=")
        configs[name] = json.loads(overrides)
    if args.only:
        configs = {k: configs[k] for k in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        edges = edge_losses(Path(tmp), configs)
        cases = [c for c in toy_cases() + hierarchy_cases() + context_cases(Path(tmp))
                 if any(t in c.name for t in args.cases)]
        t0 = time.perf_counter()
        results = run_all(cases, configs, args.seeds)
    print(f"Default objective: {', '.join(configs)} on {len(cases)} cases x seeds "
          f"{args.seeds}, toy and context evaluators, float32 on CPU, one thread "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print("The loss along the edge from \"meat\" to \"animal\" (context world, meat feature, "
          "prior +3 nats for \"animal\"; float64, T = 1), by share of \"meat\":")
    print(f"{'config':<8} " + " ".join(f"{a:>6.2f}" for a in EDGE_SHARES))
    for name, losses in edges.items():
        print(f"{name:<8} " + " ".join(f"{x:>6.3f}" for x in losses))
    print()
    report(cases, results, args.seeds)
    print()
    compare(cases, results)
    if args.out:
        args.out.write_text(json.dumps({"configs": configs, "seeds": args.seeds,
                                        "edge_shares": EDGE_SHARES, "edge_losses": edges,
                                        "results": results}, indent=1))


if __name__ == "__main__":
    main()
