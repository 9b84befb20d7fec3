"""`tokenlabel report DIR`: load a run's labels and write its static HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..records.features import parse_features
from ..report.html import ReportConfig, write_report
from ..report.load import load_comparison, open_run

REPORT_DIR = "report"
"""The report's folder inside the run folder, unless --out says otherwise."""


def parse_feature_list(spec: str | None) -> list[int] | None:
    """`--features` of a report: as for `tokenlabel label`, without the SAE's size."""
    return parse_features(spec, None)


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else (
        Path(args.dir).parent if Path(args.dir).is_file() else Path(args.dir)) / REPORT_DIR
    cfg = ReportConfig(plots=args.plots, rows_per_page=args.rows_per_page,
                       n_active_examples=args.examples)
    # From a run store the results are read as the pages are written, one at a time.
    with open_run(args.dir) as labels:
        index = write_report(labels, out, cfg, features=parse_feature_list(args.features),
                             comparison=load_comparison(args.dir))
        n = len(labels)
    print(f"report: {index.resolve()}  ({n} features; open it in a browser)")
    return 0


def add_report_parser(sub: Any) -> None:
    """Register ``tokenlabel report`` on the `tokenlabel` subparsers."""
    p = sub.add_parser(
        "report", help="write a static HTML report of a run",
        description="Write a static HTML report of a labeling run: a table of every feature "
                    "(label, scores, status, convergence, a sparkline of the winning token) "
                    "and a page per feature with its trajectory plot, top activating contexts "
                    "and output tokens. Opens from disk, no server needed. With DIR/compare.json "
                    "(tokenlabel compare) the table also shows each feature's existing "
                    "explanation, its score and the winner. PNG plots need "
                    'matplotlib (pip install "saelens-tokenlabel[plot]").')
    p.add_argument("dir", help="run folder (the --out of `tokenlabel label`), or a "
                               "tokenlabel_labels.json file")
    p.add_argument("--out", help="report folder (default: DIR/report)")
    p.add_argument("--features", help="only these features: 0:100, 1,5,9 or all (default)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="trajectory plot per feature (default: on)")
    p.add_argument("--rows-per-page", type=int, default=1000,
                   help="features per index page (default: 1000)")
    p.add_argument("--examples", type=int, default=20,
                   help="top activating contexts per feature (default: 20)")
    p.set_defaults(func=cmd_report)
