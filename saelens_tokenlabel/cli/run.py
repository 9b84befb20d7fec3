"""`tokenlabel status DIR` and `tokenlabel export DIR`: look at a run's store while it runs or
after. Neither imports torch."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..formats.neuronpedia import (
    EXPLANATION_SCORES_DIR,
    EXPLANATIONS_DIR,
    NEURONPEDIA_AUTHOR_ID,
    RECORDS_PER_FILE,
    NeuronpediaBatchConfig,
)
from ..records.names import LABEL_METHODS
from ..records.verdict import VERDICTS
from ..run.export import export_run
from ..run.store import RunStore


def add_run_parsers(sub: Any) -> None:
    """Register ``tokenlabel status`` and ``tokenlabel export``."""
    p = sub.add_parser("status", help="summarise a labeling run (its DIR/run.sqlite)",
                       description="Counts by status, the features being labeled and by "
                                   "which process, retries (a feature started again by a "
                                   "later process; not the optimisation's attempts), errors, "
                                   "time spent "
                                   "labeling, rate and time left, and the last features "
                                   "finished, of the run in DIR. Safe and right while the run "
                                   "is going on.")
    p.add_argument("dir", help="the run's --out folder (or its run.sqlite)")
    p.add_argument("--last", type=int, default=5,
                   help="how many recent features and errors (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="write a run's labels: sidecar, Neuronpedia, table",
                       description="From DIR/run.sqlite write tokenlabel_labels.json, "
                                   "neuronpedia.jsonl (readable: one line per explanation, "
                                   "scores nested) and labels.parquet (labels.csv without "
                                   "pyarrow): one row per feature with status, label, "
                                   "probability, converged, steps and every score. "
                                   "--neuronpedia adds Neuronpedia's import layout.")
    p.add_argument("dir", help="the run's --out folder (or its run.sqlite)")
    p.add_argument("--to", help="output folder (default: DIR)")
    p.add_argument("--neuronpedia-id", help="'<modelId>/<layer>-<source>' when the SAE's "
                   "metadata had none")
    p.add_argument("--format", choices=["parquet", "csv"],
                   help="table format (default: parquet when pyarrow is installed, else csv)")
    p.add_argument("--neuronpedia", action="store_true",
                   help=f"also write Neuronpedia's import layout: TO/neuronpedia/<modelId>/"
                        f"<layer>/{EXPLANATIONS_DIR}/batch-N.jsonl.gz (Explanation rows) and "
                        f"{EXPLANATION_SCORES_DIR}/batch-N.jsonl.gz (ExplanationScore rows), "
                        "replacing an earlier export there")
    p.add_argument("--records-per-file", type=int, metavar="N",
                   help=f"with --neuronpedia: explanations per batch file (default "
                        f"{RECORDS_PER_FILE}, as Neuronpedia's export-data.py)")
    p.add_argument("--neuronpedia-author-id", metavar="USER_ID",
                   help=f"with --neuronpedia: the Neuronpedia User id written as authorId "
                        f"(default {NEURONPEDIA_AUTHOR_ID}, batch-autointerp.py's default "
                        "creator)")
    p.add_argument("--only-explained", action="store_true",
                   help="keep labels whose verdict is not 'explained' out of the Neuronpedia "
                        "files (the sidecar and the table keep every feature)")
    p.set_defaults(func=cmd_export)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s"


def quiet_pipe(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A reader that stops early (``tokenlabel status DIR | head``) ends the command quietly:
    what is left unprinted goes to /dev/null, and the exit status is 0."""

    @functools.wraps(cmd)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            status = cmd(args)
            sys.stdout.flush()
            return status
        except BrokenPipeError:
            # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0

    return wrapped


def _features(features: list[int], shown: int = 12) -> str:
    """``0, 1, 3, …`` (the first `shown`, and how many more)."""
    head = ", ".join(str(f) for f in features[:shown])
    return head + (f", … ({len(features) - shown} more)" if len(features) > shown else "")


@quiet_pipe
def cmd_status(args: argparse.Namespace) -> int:
    with RunStore(args.dir, create=False) as store:
        s = store.summary(last=args.last)
        info = store.get_meta("info", {})
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    counts = s["counts"]
    order = ["ok", "dead", "nonfinite", "unlabelable", "error", "running", "interrupted",
             "pending"]
    shown = [k for k in order if k in counts] + sorted(set(counts) - set(order))
    print(f"run:          {s['path']}")
    if info:
        print(f"labeling:     {info.get('hook_name')} of {info.get('model_name')} "
              f"(d_sae={info.get('d_sae')}) with {info.get('evaluator')}")
    print(f"features:     {s['finished']}/{s['total']} finished  "
          + "  ".join(f"{k}={counts[k]}" for k in shown))
    verdicts = s.get("verdicts") or {}
    if verdicts:
        shown_v = [v for v in VERDICTS if v in verdicts] + sorted(set(verdicts) - set(VERDICTS))
        print("verdicts:     " + "  ".join(f"{v}={verdicts[v]}" for v in shown_v)
              + "  (trust 'explained')")
    _print_claims(s)
    if s.get("polysemantic"):
        print(f"flagged:      {s['polysemantic']} polysemantic (one label does not explain "
              "them: see each result's `polysemantic`)")
    methods = s.get("methods") or {}
    if set(methods) - {"descended"}:
        print("labeled by:   " + "  ".join(f"{m}={methods[m]}" for m in LABEL_METHODS
                                           if m in methods)
              + "  (amortised: a proposal accepted without descent)")
    r = s["retries"]
    print("retries:      " + (f"{r['retried']} features started again after their process "
                              f"stopped, at most {r['max']} times each" if r["retried"]
                              else "none") + f" ({r['starts']} process starts)")
    rate = s["rate_per_s"]
    eta = f", about {_duration(s['eta_s'])} left at that rate" if s.get("eta_s") else ""
    print(f"elapsed:      {_duration(s['elapsed_s'])} labeling"
          + (f", {rate * 60:.1f} features/min{eta}" if rate else ""))
    if s["created_at"]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created_at"]))
        print(f"started:      {started}")
    _print_last(s)
    return 0


def _print_claims(s: dict[str, Any]) -> None:
    """The live claims by owner, and the features a stopped process left (no live claim)."""
    if s.get("claimed"):
        beat = s.get("last_heartbeat_at")
        ago = f" (last heartbeat {max(0, time.time() - beat):.0f} s ago)" if beat else ""
        print(f"claimed:      {s['claimed']} features being labeled{ago}")
        for owner, feats in sorted(s["claims"].items()):
            print(f"  {owner}  {_features(feats)}")
    if s.get("interrupted"):
        print(f"interrupted:  {len(s['interrupted'])} features whose process stopped before "
              f"their results ({_features(s['interrupted'])}); a rerun labels them")


def _print_last(s: dict[str, Any]) -> None:
    if s["last"]:
        print("last:")
        for r in s["last"]:
            what = (f"{r['label']!r} {r.get('evidence') or ''} p={r['probability']:.3f}"
                    + ("" if r["converged"] else " (not converged)")
                    + (f" steering {r['steering_score']:+.2f}"
                       if isinstance(r.get("steering_score"), int | float) else "")
                    + (f" ({r['polysemantic']})" if r.get("polysemantic") else "")
                    + (f" [{r['method']}]" if r.get("method", "descended") != "descended"
                       else "")
                    if r["status"] == "ok" else r["status"])
            print(f"  {r['feature']:>7}  {what}")
    if s["errors"]:
        print("errors (a rerun of the same command retries these):")
        for e in s["errors"]:
            print(f"  {e['feature']:>7}  start {e['starts']}: {e['error']}")


def cmd_export(args: argparse.Namespace) -> int:
    w = export_run(args.dir, args.to, args.neuronpedia_id, args.format, _batch_config(args),
                   only_explained=args.only_explained)
    print(f"sidecar:      {w['sidecar']}")
    print(f"table:        {w['table']}")
    if "neuronpedia" not in w:
        # No Neuronpedia id: a warning (the message says how to give one), not a failure.
        print(f"neuronpedia:  not written: {w['neuronpedia_error']}")
    else:
        print(f"neuronpedia:  {w['neuronpedia_records']} explanation records in "
              f"{w['neuronpedia']}")
    b = w.get("neuronpedia_batches")
    if b is not None:
        print(f"explanations: {b.explanations} in {len(b.explanation_files)} file(s) under "
              f"{b.folder / EXPLANATIONS_DIR}")
        print(f"scores:       {b.scores} in {len(b.score_files)} file(s) under "
              f"{b.folder / EXPLANATION_SCORES_DIR}")
        if b.removed:
            print(f"removed:      {len(b.removed)} file(s) of the earlier export there")
    if w["damaged"]:
        print(f"tokenlabel: warning: {damaged_line(w['damaged'], args.dir)}", file=sys.stderr)
    return 0


def damaged_line(damaged: dict[int, str], where: str) -> str:
    """One line for the features a salvage could not read."""
    shown = ", ".join(f"{f} ({why})" for f, why in list(damaged.items())[:3])
    more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    return (f"{len(damaged)} features of the damaged run store in {where} cannot be read and "
            f"are not exported: {shown}{more}. Every other result is; the labeling command "
            "with --out set to this export's folder labels only those again.")


def _batch_config(args: argparse.Namespace) -> NeuronpediaBatchConfig | None:
    """The import layout's settings with --neuronpedia, else None."""
    if not args.neuronpedia:
        if args.records_per_file is not None or args.neuronpedia_author_id is not None:
            raise ValueError("--records-per-file and --neuronpedia-author-id set up "
                             "--neuronpedia's files; add --neuronpedia.")
        return None
    return NeuronpediaBatchConfig(
        records_per_file=(RECORDS_PER_FILE if args.records_per_file is None
                          else args.records_per_file),
        author_id=(NEURONPEDIA_AUTHOR_ID if args.neuronpedia_author_id is None
                   else args.neuronpedia_author_id))
