"""The `tokenlabel` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .config import LabelConfig

TOY = "toy"


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("label config (defaults: the dataset's paper preset, else "
                             "LabelConfig())")
    for f in dataclasses.fields(LabelConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None)
        elif f.name == "prediction":
            g.add_argument(flag, dest=f.name, choices=["two_way", "full_vocab"], default=None)
        elif f.name == "sampler":
            g.add_argument(flag, dest=f.name, choices=["balanced", "confusion"], default=None)
        elif f.name == "restarts":
            g.add_argument(flag, dest=f.name, type=_restarts_arg, default=None,
                           metavar="JSON", help='e.g. \'[{"lr": 0.1, "seed": 1}]\'; [] for none')
        else:
            typ = {"int": int, "float": float, "int | None": int,
                   "float | None": float}.get(str(f.type), float)
            g.add_argument(flag, dest=f.name, type=typ, default=None)


def _restarts_arg(text: str) -> tuple[dict[str, Any], ...]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err.msg}); e.g. '[{{\"lr\": 0.1}}]'"
                                         ) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise argparse.ArgumentTypeError("a JSON list of objects, e.g. '[{\"lr\": 0.1}]'")
    return tuple(value)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(LabelConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _load_evaluator(name: str, device: str | None, dtype: str | None):  # noqa: ANN202
    from .evaluator import Evaluator
    from .loading import load_evaluator_model

    if name == TOY:
        from .toy import load_toy_evaluator

        return load_toy_evaluator(device=device or "cpu")
    import torch

    torch_dtype = getattr(torch, dtype) if dtype else None
    return Evaluator(load_evaluator_model(name, device=device, dtype=torch_dtype))


def _print_result(result: Any, out: Path | None) -> None:
    m = result.metrics
    print(f"feature:      {result.feature}")
    print(f"label:        {result.label!r}  (tokens {result.label_tokens})")
    print(f"probability:  {result.probability:.4f}")
    print(f"converged:    {result.converged} after {result.steps} steps")
    print(f"loss:         {m['loss']:.4f} = accuracy {m['loss_accuracy']:.4f}"
          f" + entropy {m['loss_entropy']:.4f} (x λ_ent) + kl {m['loss_kl']:.4f} (x λ_kl)")
    for split in ("train", "heldout"):
        if f"{split}_balanced_accuracy" in m:
            print(f"hard label:   {split:8s} balanced accuracy "
                  f"{m[split + '_balanced_accuracy']:.3f}, F1 {m[split + '_f1']:.3f}, "
                  f"AUROC {m[split + '_auroc']:.3f}")
    if out is not None:
        print(f"written:      {out}")


def cmd_synthetic(args: argparse.Namespace) -> int:
    from .data import FeatureData
    from .labeler import label_feature

    data = FeatureData.synthetic(args.dataset)
    config = LabelConfig.preset(args.dataset, **_overrides(args))
    evaluator = _load_evaluator(args.evaluator, args.device, args.dtype)
    result = label_feature(data, evaluator, config)
    out = Path(args.out) if args.out else Path(f"{args.dataset}.label.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    _print_result(result, out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data import SYNTHETIC_NAMES

    parser = argparse.ArgumentParser(
        prog="tokenlabel",
        description="Label SAE features by token-space gradient descent "
                    "(Schulz & Fallows, arXiv 2504.00754).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="label one of the paper's synthetic features")
    p.add_argument("dataset", choices=SYNTHETIC_NAMES)
    p.add_argument("--evaluator", required=True,
                   help="model name for HookedTransformer.from_pretrained (e.g. "
                        "meta-llama/Meta-Llama-3-8B-Instruct), a folder written by "
                        "stl.save_local_model, or 'toy' for the bundled offline toy evaluator")
    p.add_argument("--out", help="JSON file for the LabelResult (default: DATASET.label.json)")
    p.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "float64"],
                   help="evaluator dtype (default: bfloat16 on GPU, float32 on CPU)")
    _config_args(p)
    p.set_defaults(func=cmd_synthetic)

    from .sae.cli import add_label_parser

    add_label_parser(sub, _config_args)
    from .run.cli import add_run_parsers

    add_run_parsers(sub)
    from .report.cli import add_report_parser

    add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError) as err:
        # Our errors say what is wrong and how to fix it; a traceback adds nothing.
        print(f"tokenlabel: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
