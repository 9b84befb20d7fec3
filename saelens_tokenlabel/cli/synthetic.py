"""`tokenlabel synthetic NAME`: label one of the paper's synthetic features."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..records.config import LabelConfig
from ..records.data import SYNTHETIC_NAMES
from .shared import (
    DTYPES,
    LABEL_FLAGS,
    add_evaluator_backend,
    add_thread_flags,
    cpu_run,
    load_evaluator,
)


def add_synthetic_parser(sub: Any) -> None:
    """Register ``tokenlabel synthetic`` on the `tokenlabel` subparsers."""
    p = sub.add_parser("synthetic", help="label one of the paper's synthetic features")
    p.add_argument("dataset", choices=SYNTHETIC_NAMES)
    p.add_argument("--evaluator", required=True,
                   help="model name for HookedTransformer.from_pretrained (e.g. "
                        "meta-llama/Meta-Llama-3-8B-Instruct), a folder written by "
                        "stl.save_local_model, or 'toy' for the bundled offline toy evaluator")
    p.add_argument("--out", help="JSON file for the LabelResult (default: DATASET.label.json)")
    p.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="evaluator dtype (default: bfloat16 on GPU, float32 on CPU)")
    add_evaluator_backend(p)
    add_thread_flags(p)
    LABEL_FLAGS.add(p)
    p.set_defaults(func=cmd_synthetic)


def cmd_synthetic(args: argparse.Namespace) -> int:
    from ..descent.labeler import label_feature
    from ..evaluator.loading import default_device
    from ..records.data import FeatureData

    config = LabelConfig.preset(args.dataset, **LABEL_FLAGS.overrides(args))
    data = FeatureData.synthetic(args.dataset)
    device = args.device or default_device()
    cpu_run(args, device)
    evaluator = load_evaluator(args.evaluator, device, args.dtype, args.evaluator_backend)
    result = label_feature(data, evaluator, config)
    out = Path(args.out) if args.out else Path(f"{args.dataset}.label.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    print_result(result, out)
    return 0


def print_result(result: Any, out: Path | None) -> None:
    """One labeled feature, as `tokenlabel synthetic` prints it."""
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
