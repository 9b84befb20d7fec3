"""Amortised labels against all-descent, side by side, on a planted SAE world.

A planted world (`toy.world.build_world`: 240 features by default over the toy evaluator's
concepts, random member subsets, several features per concept, noise, dead and liar features,
decoder rows clustered by concept) is labeled twice with the toy evaluator and the default
`LabelConfig`, from one activation cache built beforehand:

* all-descent: every feature by token-space gradient descent;
* amortised: a seed set by descent, then proposals from the decoder rows, each verified on
  the feature's examples; rejected ones descended, warm-started (`run.amortized`).

It prints both runs side by side: labels that match the planted truth, the amortised run's
agreement with the all-descent labels on the features the descent labels correctly, the total
optimisation steps (every attempt's) and wall time of each and their ratio, how each feature
was labeled, the map the amortised run chose and its cross-validated accuracy, and the
accepted proposals whose verification score is below the bar (must be none).

    python bench/bench_amortize.py                   # about 15 minutes on 2 CPU cores
    python bench/bench_amortize.py --features 60     # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.records.names import AMORTIZER_DIR
from saelens_tokenlabel.run.amortise.map import AmortizeConfig, Amortizer
from saelens_tokenlabel.run.amortise.proposals import accepts
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ScoreConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy import load_toy_evaluator
from saelens_tokenlabel.toy.world import WorldConfig, build_world


def total_steps(result) -> int:
    """Optimisation steps a result cost: every attempt's (0 for an accepted proposal)."""
    if result.attempts:
        return sum(a.steps for a in result.attempts)
    return result.steps


def run(world, evaluator, folder: Path, cache: CacheConfig, amortize) -> tuple[dict, float]:
    t = time.perf_counter()
    labels = label_sae_features(
        world.sae, world.subject, evaluator, list(world.corpus), None, LabelConfig(),
        cache=cache, run_dir=folder, amortize=amortize, progress=False,
        scores=ScoreConfig(scorers=()))
    return {f: labels[f] for f in labels}, time.perf_counter() - t


def compare(world, descent: dict, amortised: dict, bar: float) -> dict:
    truth = world.truth()
    right = [f for f, r in descent.items() if r.status == "ok" and r.label == truth[f]]
    agree = [f for f in right if amortised[f].label == descent[f].label]
    bad = [f for f, r in amortised.items() if r.method == "amortised"
           and not accepts(r.metrics, bar)]
    liars = world.kinds()["liar"]
    return {
        "features": len(truth),
        "descent_right": len(right),
        "amortised_right": sum(r.status == "ok" and r.label == truth[f]
                               for f, r in amortised.items()),
        "agreement": len(agree) / max(1, len(right)),
        "steps": (sum(map(total_steps, descent.values())),
                  sum(map(total_steps, amortised.values()))),
        "methods": dict(Counter(r.method for r in amortised.values() if r.status == "ok")),
        "accepted_below_bar": bad,
        "liars": {f: (truth[f], amortised[f].method, amortised[f].label) for f in liars},
        "steps_by_kind": {kind: (sum(total_steps(descent[f]) for f in feats),
                                 sum(total_steps(amortised[f]) for f in feats))
                          for kind, feats in world.kinds().items()},
        "steps_by_method": {m: sum(total_steps(r) for r in amortised.values() if r.method == m)
                            for m in ("descended", "warm_started", "amortised")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=int, default=240)
    ap.add_argument("--liars", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="JSON file for the figures")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = build_world(tmp / "world", WorldConfig(n_features=args.features,
                                                       liars=args.liars, seed=args.seed))
        evaluator = load_toy_evaluator()
        cache = CacheConfig(cache_dir=tmp / "cache")
        build_activation_cache(Subject.of(world.subject, world.sae), list(world.corpus), None,
                               cache,
                               progress=False)
        descent, t_descent = run(world, evaluator, tmp / "descent", cache, None)
        amortised, t_amortised = run(world, evaluator, tmp / "amortised", cache,
                                     AmortizeConfig())
        amortizer = Amortizer.load(tmp / "amortised" / AMORTIZER_DIR)
        figs = compare(world, descent, amortised, LabelConfig().success_score)
    s_d, s_a = figs["steps"]
    figs.update(wall_s=(t_descent, t_amortised), map=amortizer.method,
                map_cv_accuracy=amortizer.cv_accuracy, map_train=len(amortizer.features),
                map_classes=amortizer.class_text)
    print(f"planted world: {figs['features']} features ({args.liars} liars), toy evaluator, "
          "default LabelConfig")
    print(f"{'':34}{'all-descent':>14}{'amortised':>14}{'ratio':>8}")
    print(f"{'labels = planted truth':34}{figs['descent_right']:>14}"
          f"{figs['amortised_right']:>14}")
    print(f"{'optimisation steps':34}{s_d:>14}{s_a:>14}{s_a / max(1, s_d):>8.2f}")
    print(f"{'wall time (s)':34}{t_descent:>14.0f}{t_amortised:>14.0f}"
          f"{t_amortised / t_descent:>8.2f}")
    print(f"agreement with all-descent on the {figs['descent_right']} features it labels "
          f"right: {figs['agreement']:.1%}")
    print(f"how the amortised run labeled: {figs['methods']}")
    print(f"map: {amortizer.method} on {len(amortizer.features)} labels, classes "
          f"{amortizer.class_text}, cross-validated top-1 {amortizer.cv_accuracy}")
    print(f"steps by kind of feature (all-descent, amortised): {figs['steps_by_kind']}")
    print(f"amortised run's steps by method: {figs['steps_by_method']}")
    print(f"accepted proposals below the bar: {len(figs['accepted_below_bar'])}")
    print(f"liars (truth, method, label): {figs['liars']}")
    if args.out:
        Path(args.out).write_text(json.dumps(figs, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
