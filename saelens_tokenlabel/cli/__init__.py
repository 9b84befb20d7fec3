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
import os
import signal
import sys
import traceback

from ..records.errors import TokenlabelError, signal_name
from ..run.stops import clean_stops
from .compare import add_compare_parser
from .demo import add_demo_parser
from .label import add_label_parser
from .report import add_report_parser
from .run import add_run_parsers
from .settings import add_config_parser
from .shared import import_modules, prepare_threads
from .synthetic import add_synthetic_parser

__all__ = ["DEBUG_ENV", "build_parser", "main"]

DEBUG_ENV = "TOKENLABEL_DEBUG"
"""Set (not "0"): every error and stop is shown with its traceback, as ``--debug`` does."""
NOTE_PREFIX = "saelens_tokenlabel: "


def build_parser() -> argparse.ArgumentParser:
    """The `tokenlabel` parser, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tokenlabel",
        description="Label SAE features by token-space gradient descent "
                    "(Schulz & Fallows, arXiv 2504.00754).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an error or a stop, not only its one line "
                             f"(also: {DEBUG_ENV}=1)")
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
    """Run `tokenlabel ARGV`; returns the exit status: 0 done; 2 an error, one line on stderr
    naming what failed, whether results are safe and what to do (``--debug`` or
    ``TOKENLABEL_DEBUG=1``: with its traceback); 143 or 130 stopped by SIGTERM or SIGINT,
    one line saying what is saved."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        with clean_stops():  # SIGTERM / SIGINT: RunInterrupted, claims released on the way
            # Before anything imports torch: OpenMP reads its wait policy when torch loads it.
            prepare_threads(args)
            import_modules(getattr(args, "imports", []))
            return int(args.func(args))
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        _report(stop, f"stopped by {signal_name(signum)}.", debug)
        return 128 + signum
    except (TokenlabelError, ValueError, KeyError, OSError) as err:
        # Our errors (ConfigError included) say what is wrong and how to fix it; a traceback
        # adds nothing. One line, so that it reads like argparse's own errors.
        _report(err, f"error: {one_line(err)}", debug)
        return 2


def _report(err: BaseException, line: str, debug: bool) -> None:
    """``tokenlabel: <line>`` on stderr (after the traceback, with `debug`), the package's
    notes on `err` (what is saved) joined to it: still one line."""
    if debug:
        traceback.print_exception(err)
    notes = [" ".join(n.removeprefix(NOTE_PREFIX).split()) for n in
             getattr(err, "__notes__", ()) if isinstance(n, str)]
    print(" ".join([f"tokenlabel: {line}", *notes]), file=sys.stderr)


def one_line(err: BaseException) -> str:
    """The error's message on one line."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
    return " ".join(str(text).split())
