"""`tokenlabel compare DIR --explanations SRC`: a run's labels against existing explanations of
the same features (Neuronpedia, delphi, or a feature<TAB>text file), both scored as hard labels
by the same evaluator on the run's own held-out examples; writes ``DIR/compare.tsv`` and
``DIR/compare.json``.

The evaluator and the subject tokenizer default to the run's (its recorded info). torch,
TransformerLens and transformers are imported when the command runs, not when the parser is
built.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..formats.comparison import METRICS, CompareConfig
from ..formats.explanations import read_explanations
from ..records.features import parse_features
from .shared import (
    DTYPES,
    TOY,
    add_evaluator_backend,
    add_import_flag,
    add_thread_flags,
    cpu_run,
    load_evaluator,
)


def add_compare_parser(sub: Any) -> None:
    """Register ``tokenlabel compare`` on the `tokenlabel` subparsers."""
    p = sub.add_parser(
        "compare", help="score a run's labels against existing explanations, head to head",
        description="Score each labeled feature's label and an existing explanation of it "
                    "(Neuronpedia export, delphi explanations/ folder, or feature<TAB>text "
                    "file) as hard labels in the rating prompt's label slot, by the same "
                    "evaluator on the run's own held-out examples, and count wins, ties and "
                    "losses. Writes DIR/compare.tsv and DIR/compare.json (shown by tokenlabel "
                    "report). Needs the run's activation cache.")
    p.add_argument("dir", help="run folder (the --out of `tokenlabel label`)")
    p.add_argument("--explanations", required=True, metavar="SRC",
                   help="Neuronpedia JSONL (.jsonl, .jsonl.gz, or a folder of batch-N.jsonl.gz), "
                        "delphi's explanations/ folder, or a feature<TAB>text file")
    p.add_argument("--type-name", help="Neuronpedia: keep explanations of this typeName only")
    p.add_argument("--module", help="delphi: the module (hookpoint) whose latents to read, "
                   "when the folder holds several")
    p.add_argument("--features", help="only these features: 0:100, 1,5,9 or all (default)")
    p.add_argument("--metric", choices=METRICS, default="balanced_accuracy",
                   help="held-out detection score to compare (default: balanced_accuracy)")
    p.add_argument("--tie-tolerance", type=float, default=CompareConfig.tie_tolerance,
                   help="scores this close are a tie (default: 1e-9, equal)")
    p.add_argument("--bootstrap-samples", type=int, default=CompareConfig.bootstrap_samples,
                   help="resamples for the interval of the mean difference")
    p.add_argument("--seed", type=int, default=CompareConfig.seed, help="bootstrap seed")
    p.add_argument("--evaluator", help="evaluator name, folder, or 'toy' (default: the run's)")
    p.add_argument("--model", help="subject model name or folder, for its tokenizer (default: "
                   "the run's model name)")
    add_evaluator_backend(p)
    add_import_flag(p)
    p.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    add_thread_flags(p)
    p.add_argument("--dtype", choices=DTYPES,
                   help="evaluator dtype (default: bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--head", type=int, default=10, help="table rows to print (default: 10)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    # What can be checked without a model, first: a bad source fails in a second.
    config = CompareConfig(metric=args.metric, tie_tolerance=args.tie_tolerance,
                           bootstrap_samples=args.bootstrap_samples, seed=args.seed)
    source = read_explanations(args.explanations, args.type_name, args.module)
    # Imported here, not above: building the parser must not load torch.
    from ..evaluator.loading import default_device
    from ..report.load import load_run
    from ..sae.compare import compare_labels

    labels = load_run(args.dir)
    info = labels.info
    features = parse_features(args.features, info.get("d_sae"))
    device = args.device or default_device()
    cpu_run(args, device)
    evaluator = load_evaluator(evaluator_name(args.evaluator, info), device, args.dtype,
                               args.evaluator_backend)
    tokenizer = subject_tokenizer(args.model or info.get("sae_model_name")
                                  or info.get("model_name"))
    comparison = compare_labels(labels, source, evaluator, tokenizer, features, config)
    run_dir = Path(args.dir).parent if Path(args.dir).is_file() else Path(args.dir)
    tsv, js = comparison.save(run_dir)
    s = source.info
    print(f"explanations: {_n(s.n_explanations, 'feature')} from {s.path} ({s.format}; "
          f"{_n(s.duplicates, 'duplicate')} dropped: {s.rule} kept)")
    print(f"evaluator:    {comparison.evaluator}")
    for note in comparison.notes:
        print(f"note:         {note}")
    print(f"compare:      {comparison.summary.line()}")
    if comparison.not_compared:
        print(f"not compared: {_n(len(comparison.not_compared), 'feature')} (reasons in "
              f"{js.name})")
    unknown = unknown_features(source.explanations, info.get("d_sae"))
    if unknown:
        print(f"unknown:      {_n(len(unknown), 'explanation')} of features the SAE does not "
              f"have (d_sae={info['d_sae']}), skipped: {_span(unknown)}; is the source of "
              "this SAE?")
    print(comparison.table(args.head))
    print(f"written:      {tsv}, {js}")
    return 0


def unknown_features(explained: Any, d_sae: Any) -> list[int]:
    """The explained features beyond the SAE's `d_sae` (none when the run does not say)."""
    if not isinstance(d_sae, int):
        return []
    return sorted(f for f in explained if not 0 <= int(f) < d_sae)


def _span(features: list[int]) -> str:
    shown = ", ".join(map(str, features[:8]))
    return shown + (f", ... ({len(features) - 8} more)" if len(features) > 8 else "")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def evaluator_name(flag: str | None, info: dict[str, Any]) -> str:
    """`--evaluator`, else the run's: the bundled toy evaluator's model name means 'toy'."""
    if flag:
        return flag
    name = info.get("evaluator")
    if not name:
        raise ValueError("The run records no evaluator; pass --evaluator NAME_OR_DIR (or toy).")
    from ..evaluator.loading import LOCAL_CONFIG
    from ..toy import TOY_EVALUATOR_DIR

    toy = json.loads((TOY_EVALUATOR_DIR / LOCAL_CONFIG).read_text()).get("model_name")
    return TOY if name == toy else str(name)


def subject_tokenizer(name: str | None) -> Any:
    """The subject model's tokenizer (it turns the cached tokens into words): from a folder
    (`save_local_model` or ``save_pretrained``), else TransformerLens's tokenizer for the
    model name. Only the tokenizer loads, never the weights."""
    if not name:
        raise ValueError("The run records no subject model; pass --model NAME_OR_DIR.")
    from transformers import AutoTokenizer

    if Path(name).is_dir():
        return AutoTokenizer.from_pretrained(name)
    try:
        from transformer_lens.loading_from_pretrained import (
            get_official_model_name,
            get_pretrained_model_config,
        )

        official = get_official_model_name(name)
        cfg = get_pretrained_model_config(official)
        return AutoTokenizer.from_pretrained(cfg.tokenizer_name or official)
    except Exception as err:  # noqa: BLE001 - any loader failure means the same fix
        raise ValueError(f"Cannot load the subject tokenizer of {name!r} ({err}); pass "
                         "--model with the subject model's name or folder.") from None
