"""The command line (layer 8): `tokenlabel` and its commands.

Owns the parser and one module per command; may import any layer, and nothing imports it.

One module per command (`synthetic.py`, `label.py`, `run.py`: status and export,
`report.py`, `demo.py`); config flags come from the config dataclasses (`flags.py`).
Building the parser imports no torch, TransformerLens or SAELens: `tokenlabel --help`,
`status`, `export` and `report` stay fast; `label`, `synthetic` and `demo` import them when
they run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .compare import add_compare_parser
from .demo import add_demo_parser
from .label import add_label_parser
from .report import add_report_parser
from .run import add_run_parsers
from .settings import add_config_parser
from .shared import import_modules, prepare_threads
from .synthetic import add_synthetic_parser

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `tokenlabel` parser, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tokenlabel",
        description="Label SAE features by token-space gradient descent "
                    "(Schulz & Fallows, arXiv 2504.00754).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_synthetic_parser(sub)
    add_label_parser(sub)
    add_run_parsers(sub)
    add_report_parser(sub)
    add_demo_parser(sub)
    add_compare_parser(sub)
    add_config_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `tokenlabel ARGV`; returns the exit status (2: bad input, one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # Before anything imports torch: OpenMP reads its wait policy when torch loads it.
        prepare_threads(args)
        import_modules(getattr(args, "imports", []))
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError) as err:
        # Our errors (ConfigError included) say what is wrong and how to fix it; a traceback
        # adds nothing. One line, so that it reads like argparse's own errors.
        print(f"tokenlabel: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The error's message on one line."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
    return " ".join(str(text).split())
