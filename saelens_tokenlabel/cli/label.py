"""`tokenlabel label`: label features of an SAE from SAELens's pretrained directory (or one
saved on disk) on a corpus, and write the labels, the sidecar file and Neuronpedia JSONL.

torch, TransformerLens and SAELens are imported when the command runs, not when the parser
is built.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ..formats.labelset import result_score
from ..records.config import LabelConfig
from ..records.features import parse_features
from ..records.names import LABELS_TSV, NEURONPEDIA_JSONL, RUN_STORE_FILENAME, SIDECAR_FILENAME
from ..run.amortise.config import AmortizeConfig
from ..sae.config import CacheConfig, ExampleConfig
from ..sae.scorers.registry import DEFAULT_SCORERS
from .flags import ConfigFlags
from .run import store_errors
from .shared import (
    BACKEND_HELP,
    DTYPES,
    LABEL_FLAGS,
    add_evaluator_backend,
    add_import_flag,
    load_evaluator,
)

CACHE_FLAGS = ConfigFlags(
    CacheConfig, title="activation cache", dest_prefix="cache_",
    renames={"batch_size": "--cache-batch-size", "overwrite": "--overwrite-cache"})
"""CacheConfig's flags; `batch_size` and `overwrite` renamed beside LabelConfig's."""
AMORTIZE_FLAGS = ConfigFlags(
    AmortizeConfig, title="amortised labels (with --amortize)", dest_prefix="amortize_",
    renames={f: "--amortize-" + f.replace("_", "-")
             for f in AmortizeConfig.__dataclass_fields__})
"""AmortizeConfig's flags, each ``--amortize-<field>``: read with ``--amortize`` only."""
EXAMPLE_FLAGS = ConfigFlags(ExampleConfig, title="examples per feature",
                            dest_prefix="examples_", renames={"seed": "--example-seed"})
"""ExampleConfig's flags; `seed` renamed beside LabelConfig's."""


def add_label_parser(sub: Any) -> None:
    """Register ``tokenlabel label`` on the `tokenlabel` subparsers."""
    p = sub.add_parser(
        "label", help="label features of an SAE on a corpus",
        description="Label SAE features: run the subject model and the SAE over a corpus "
                    "(cached), draw examples per feature, and find each label by token-space "
                    "gradient descent. Every result goes into OUT/run.sqlite as soon as its "
                    "batch is done, so rerunning the same command resumes; at the end "
                    "labels.tsv, tokenlabel_labels.json (full results) and neuronpedia.jsonl "
                    "are written into --out. See tokenlabel status / export.")
    _add_sources(p)
    p.add_argument("--features", default="all", help="0:100, 1,5,9 or all (default: %(default)s)")
    p.add_argument("--evaluator", required=True,
                   help="evaluator model name, a folder from stl.save_local_model, or 'toy'")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--neuronpedia-id", help="'<modelId>/<layer>-<source>' when the SAE's "
                   "metadata has none")
    p.add_argument("--features-per-batch", type=int, default=8,
                   help="features sharing one optimisation (default: %(default)s)")
    _add_scores(p)
    add_import_flag(p)
    p.add_argument("--order", choices=["index", "attribution"], default="index",
                   help="labeling order: feature index, or largest attribution score first "
                        "(default: %(default)s)")
    _add_ray(p)
    p.add_argument("--save-sae", action="store_true",
                   help="also save the SAE, labels attached, into OUT/sae")
    p.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="evaluator dtype (default: bfloat16 on GPU, float32 on CPU)")
    add_evaluator_backend(p)
    p.add_argument("--amortize", action="store_true",
                   help="label most features by proposals of a map learned from the first "
                        "ones' labels, each verified on the feature's examples (rejected: "
                        "descended, warm-started); see the README's 'Amortised labels'")
    AMORTIZE_FLAGS.add(p)
    CACHE_FLAGS.add(p)
    EXAMPLE_FLAGS.add(p)
    LABEL_FLAGS.add(p)
    p.set_defaults(func=cmd_label)


def _add_sources(p: Any) -> None:
    src = p.add_argument_group("SAE, subject model and corpus")
    src.add_argument("--sae-release", help="SAELens pretrained release (e.g. gpt2-small-res-jb)")
    src.add_argument("--sae-id", help="SAE id within the release (e.g. blocks.8.hook_resid_pre)")
    src.add_argument("--sae-path", help="folder of an SAE saved with sae.save_model")
    src.add_argument("--model", help="subject model: name for HookedTransformer.from_pretrained "
                     "or a folder from stl.save_local_model (default: the SAE's "
                     "metadata.model_name)")
    src.add_argument("--model-backend", choices=("hooked", "bridge"), default="hooked",
                     help=BACKEND_HELP.format(what="subject model") + "; a bridge from the hub "
                          "gets HookedTransformer's weight processing (enable_compatibility_"
                          "mode, with the SAE's model_from_pretrained_kwargs), so the SAE reads "
                          "the activations it was trained on")
    src.add_argument("--corpus", required=True,
                     help="a .txt file (one document per line), a .jsonl file, a local dataset "
                          "folder, or a Hugging Face dataset name (streamed)")
    src.add_argument("--text-field", default="text",
                     help="field with the text (JSONL, datasets; default: %(default)s)")
    src.add_argument("--split", default="train",
                     help="dataset split (default: %(default)s)")


def _add_scores(p: Any) -> None:
    sc = p.add_argument_group("SAE-side scorers")
    sc.add_argument("--score", action="append", metavar="NAME",
                    help=f"a scorer to run on every label (repeat for several; default: "
                         f"{', '.join(DEFAULT_SCORERS)}); a user's own scorer is named once "
                         "its module is imported (--import MODULE)")
    sc.add_argument("--no-score", action="append", default=[], metavar="NAME",
                    help="leave a scorer out (repeat for several)")
    sc.add_argument("--score-option", action="append", default=[], metavar="NAME.FIELD=VALUE",
                    help="a scorer setting, e.g. output_side.k=20 or coherence.count=prompt "
                         "(VALUE read as JSON when it parses, else as text)")


def _score_config(args: argparse.Namespace) -> Any:
    from ..sae.scorers.apply import ScoreConfig

    names = [n for n in (args.score or DEFAULT_SCORERS) if n not in args.no_score]
    options: dict[str, dict[str, Any]] = {}
    for item in args.score_option:
        key, eq, value = item.partition("=")
        name, dot, fld = key.partition(".")
        if not (eq and dot and name and fld):
            raise ValueError(f"--score-option {item!r}: write NAME.FIELD=VALUE, e.g. "
                             "output_side.k=20.")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        options.setdefault(name, {})[fld] = parsed
    return ScoreConfig(scorers=tuple(names), options=options)


def _add_ray(p: Any) -> None:
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="label on Ray actors, one per GPU: 'auto' joins the cluster started "
                        "with `ray start`, ray://HOST:10001 a remote one; without ADDRESS a "
                        "local instance (pip install 'saelens-tokenlabel[ray]')")
    p.add_argument("--ray-workers", type=int, metavar="N",
                   help="Ray actors (default: one per GPU; one on CPU)")
    p.add_argument("--ray-gpus-per-worker", type=float, metavar="G",
                   help="GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0)")


class SaeLoadError(ValueError):
    """The SAE could not be loaded; the message (one line) names the file or release, what is
    wrong and what to do."""


_RESAVE = "save the SAE again with sae.save_model(folder)"


def _load_sae(args: argparse.Namespace, device: str) -> Any:
    from sae_lens import SAE

    from ..evaluator.loading import from_hub

    if args.sae_path and (args.sae_release or args.sae_id):
        raise ValueError("Pass either --sae-path or --sae-release with --sae-id, not both.")
    if args.sae_path:
        folder = Path(args.sae_path)
        if not (folder / "cfg.json").is_file():
            raise FileNotFoundError(f"--sae-path {args.sae_path}: no cfg.json there; pass a "
                                    "folder written by sae.save_model(path).")
        _check_sae_cfg(folder / "cfg.json")
        try:
            return SAE.load_from_disk(args.sae_path, device=device)
        except TypeError as err:  # a field the SAE class needs is missing
            fields = re.findall(r"'(\w+)'", str(err))
            raise SaeLoadError(
                f"{folder / 'cfg.json'} lacks {', '.join(map(repr, fields)) or 'a field'} "
                f"({err}): add it, or {_RESAVE}.") from None
        except RuntimeError as err:  # the weights do not fit the config
            raise SaeLoadError(_weights_message(folder, err)) from None
    if not (args.sae_release and args.sae_id):
        raise ValueError("Name the SAE: --sae-release RELEASE --sae-id ID (see SAELens's "
                         "pretrained_saes.yaml), or --sae-path DIR.")
    return from_hub(f"{args.sae_release}/{args.sae_id}", lambda: SAE.from_pretrained(
        args.sae_release, args.sae_id, device=device), what="SAE",
        local="pass --sae-path with a folder written by sae.save_model(folder) on a machine "
              "with network")


def _check_sae_cfg(path: Path) -> None:
    """`path` (an SAE's cfg.json) is a JSON object: else one line naming the file."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SaeLoadError(f"{path} is not valid JSON ({err}): the file is damaged or was cut "
                           f"short; {_RESAVE}.") from None
    if not isinstance(cfg, dict):
        raise SaeLoadError(f"{path} holds a {type(cfg).__name__}, not the JSON object of an "
                           f"SAE config; {_RESAVE}.")


def _weights_message(folder: Path, err: RuntimeError) -> str:
    from ..evaluator.loading import weights_error

    weights = sorted(p.name for p in folder.glob("*.safetensors")) or ["the weights"]
    return (f"The weights in {folder / weights[0]} do not fit {folder / 'cfg.json'} "
            f"({weights_error(err)}): its d_in or d_sae disagrees with them. Correct cfg.json, "
            f"or {_RESAVE}.")


def _load_model(args: argparse.Namespace, sae: Any, device: str) -> Any:
    from ..evaluator.loading import LOCAL_CONFIG, load_model

    name = args.model or sae.cfg.metadata.model_name
    if not name:
        raise ValueError("The SAE's metadata names no model; pass --model.")
    kwargs = dict(sae.cfg.metadata.model_from_pretrained_kwargs or {})
    if args.model_backend == "hooked":
        return load_model(name, device, backend="hooked", **kwargs)
    model = load_model(name, device, backend="bridge")
    if (Path(name) / LOCAL_CONFIG).is_file():
        return model  # saved by save_local_model as the SAE saw them: processed already
    # SAELens SAEs are trained on HookedTransformer's processed weights (LayerNorm folded,
    # writing weights centred) unless their from_pretrained kwargs say otherwise.
    flags = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
    model.enable_compatibility_mode(disable_warnings=True,
                                    **{k: bool(kwargs[k]) for k in flags if k in kwargs})
    return model


def _write_tsv(labels: Any, path: Path) -> None:
    lines = ["feature\tstatus\tlabel\tprobability\tscore"]
    for f in labels:
        r = labels[f]
        _, score = result_score(r)
        label = r.label.replace("\t", " ").replace("\n", " ")
        lines.append(f"{f}\t{r.status}\t{label}\t{r.probability:.4f}\t"
                     f"{'' if score is None else f'{score:.4f}'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class EvaluatorLoader:
    """Loads the named evaluator inside a Ray actor, on the GPU Ray gave it (else the CPU),
    so the model is read from disk on its node instead of pickled from the driver."""

    def __init__(self, name: str, dtype: str | None, backend: str = "hooked") -> None:
        self.name, self.dtype, self.backend = name, dtype, backend

    def __call__(self) -> Any:
        import torch

        return load_evaluator(self.name, "cuda" if torch.cuda.is_available() else "cpu",
                               self.dtype, self.backend)


def _ray_config(args: argparse.Namespace) -> Any:
    if args.ray is None:
        if args.ray_workers is not None or args.ray_gpus_per_worker is not None:
            raise ValueError("--ray-workers and --ray-gpus-per-worker need --ray [ADDRESS].")
        return None
    from ..run.ray_backend import RayConfig

    return RayConfig(address=args.ray, num_workers=args.ray_workers,
                     num_gpus=args.ray_gpus_per_worker,
                     evaluator_loader=EvaluatorLoader(args.evaluator, args.dtype,
                                                      args.evaluator_backend))


@store_errors
def cmd_label(args: argparse.Namespace) -> int:
    # The configs first: a bad value fails before any model loads.
    config: LabelConfig = LABEL_FLAGS.build(args)
    cache: CacheConfig = CACHE_FLAGS.build(args)
    examples: ExampleConfig = EXAMPLE_FLAGS.build(args)
    scores = _score_config(args)
    if AMORTIZE_FLAGS.overrides(args) and not args.amortize:
        raise ValueError("The --amortize-* flags set the amortised mode: add --amortize.")
    amortize = AMORTIZE_FLAGS.build(args) if args.amortize else None
    # Imported here, not above: building the parser must not load torch or SAELens.
    from ..evaluator.loading import default_device
    from ..run.pipeline import label_sae_features
    from ..sae.corpus import Corpus

    ray = _ray_config(args)
    device = args.device or default_device()
    sae = _load_sae(args, device)
    features = parse_features(args.features, int(sae.cfg.d_sae))
    corpus = Corpus.of(args.corpus, text_field=args.text_field, split=args.split)
    model = _load_model(args, sae, device)
    # With Ray the actors label; the driver's evaluator only renders prompts, on the CPU.
    evaluator = load_evaluator(args.evaluator, "cpu" if ray is not None else device,
                                args.dtype, args.evaluator_backend)
    out = Path(args.out)
    # No folder yet: the run store creates it once the inputs are known good, so a start that
    # fails (a bad corpus, SAE or model) leaves nothing behind.
    sidecar = out / SIDECAR_FILENAME
    # A folder from before the run store: its sidecar seeds the store once.
    legacy = sidecar if sidecar.is_file() and not (out / RUN_STORE_FILENAME).exists() else None
    labels = label_sae_features(sae, model, evaluator, corpus, features, config, cache=cache,
                                examples=examples, features_per_batch=args.features_per_batch,
                                run_dir=out, checkpoint=legacy, order=args.order, ray=ray,
                                amortize=amortize, scores=scores)
    out.mkdir(parents=True, exist_ok=True)
    labels.save(sidecar)
    _write_tsv(labels, out / LABELS_TSV)
    print(f"labeled:      {len(labels)} features {_counts(labels)}")
    for f in labels:
        r = labels[f]
        if r.status == "ok":
            print(f"  {f:>6}  {r.label!r:20}  p={r.probability:.3f}"
                  f"{'' if r.converged else '  (not converged)'}"
                  f"{'' if r.method == 'descended' else f'  [{r.method}]'}")
    print(f"written:      {out / LABELS_TSV}, {sidecar}, {out / RUN_STORE_FILENAME}")
    try:
        n = labels.to_neuronpedia(out / NEURONPEDIA_JSONL, args.neuronpedia_id)
        print(f"neuronpedia:  {n} explanation records in {out / NEURONPEDIA_JSONL}")
    except ValueError as err:
        # The labels are written already; say why the export is missing, and fail.
        print(f"neuronpedia:  not written: {err}")
        return 2
    if args.save_sae:
        labels.attach(sae)
        sae.save_model(out / "sae")
        print(f"sae:          {out / 'sae'} (labels in cfg.json metadata and the sidecar)")
    return 0


def _counts(labels: Any) -> dict[str, int]:
    return {k: len(v) for k, v in labels.by_status().items()}
