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
from typing import TYPE_CHECKING, Any

from ..records.errors import SaeLoadError
from ..records.features import parse_features
from ..records.files import atomic_write_text
from ..records.names import LABELS_TSV, NEURONPEDIA_JSONL, RUN_STORE_FILENAME, SIDECAR_FILENAME
from ..run.outputs import Outputs
from ..sae.scorers.registry import DEFAULT_SCORERS
from .settings import AMORTIZE_FLAGS, CACHE_FLAGS, EXAMPLE_FLAGS, settings_from
from .shared import (
    BACKEND_HELP,
    DTYPES,
    LABEL_FLAGS,
    add_evaluator_backend,
    add_import_flag,
    add_thread_flags,
    cpu_run,
    load_evaluator,
)

if TYPE_CHECKING:
    from sae_lens import SAE

USAGE = ("tokenlabel label (--sae-path DIR | --sae-release R --sae-id ID) --corpus SRC "
         "--evaluator NAME --out DIR [--features 0:100] [--config FILE] [options]")


def add_label_parser(sub: Any) -> None:
    """Register ``tokenlabel label`` on the `tokenlabel` subparsers: what a user needs first
    (what to label, and with what), then how the run goes, then one group per config."""
    p = sub.add_parser(
        "label", help="label features of an SAE on a corpus", usage=USAGE,
        description="Label SAE features: run the subject model and the SAE over a corpus "
                    "(cached), draw examples per feature, and find each label by token-space "
                    "gradient descent. Every result goes into OUT/run.sqlite as soon as its "
                    "batch is done, so rerunning the same command resumes; at the end "
                    "labels.tsv, tokenlabel_labels.json (full results) and neuronpedia.jsonl "
                    "are written into --out. Settings can come from a file (--config; print "
                    "a run's with `tokenlabel config DIR`); flags override it. See "
                    "tokenlabel status / export.")
    _add_sources(p)
    _add_run(p)
    _add_scores(p)
    _add_ray(p)
    LABEL_FLAGS.add(p)
    EXAMPLE_FLAGS.add(p)
    CACHE_FLAGS.add(p)
    AMORTIZE_FLAGS.add(p)
    p.set_defaults(func=cmd_label)


def _add_run(p: Any) -> None:
    run = p.add_argument_group("how the run goes")
    run.add_argument("--config", metavar="FILE",
                     help="run settings as YAML (sections label, examples, cache, scores, "
                          "amortize); `tokenlabel config DIR` prints a run's")
    run.add_argument("--device", help="cuda / cpu (default: cuda if available)")
    run.add_argument("--dtype", choices=DTYPES,
                     help="evaluator dtype (default: bfloat16 on GPU, float32 on CPU)")
    add_evaluator_backend(run)
    add_thread_flags(run)
    run.add_argument("--features-per-batch", type=int, default=8,
                     help="features sharing one optimisation (default: 8)")
    run.add_argument("--order", choices=["index", "attribution"], default="index",
                     help="labeling order: feature index (default), or largest attribution "
                          "score first")
    run.add_argument("--neuronpedia-id", help="'<modelId>/<layer>-<source>' when the SAE's "
                     "metadata has none")
    run.add_argument("--only-explained", action="store_true",
                     help="write only labels whose verdict is 'explained' into "
                          "neuronpedia.jsonl (labels.tsv and the sidecar keep every feature)")
    run.add_argument("--save-sae", action="store_true",
                     help="also save the SAE, labels attached, into OUT/sae")
    run.add_argument("--amortize", action="store_true",
                     help="label most features by proposals of a map learned from the first "
                          "ones' labels, each verified on the feature's examples (rejected: "
                          "descended, warm-started); see docs/amortised.md")
    add_import_flag(run)


def _add_sources(p: Any) -> None:
    src = p.add_argument_group("what to label, and with what")
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
                     help="field with the text (JSONL, datasets; default: text)")
    src.add_argument("--split", default="train", help="dataset split (default: train)")
    src.add_argument("--features", default="all", help="0:100, 1,5,9 or all (default: %(default)s)")
    src.add_argument("--evaluator", required=True,
                     help="evaluator model name, a folder from stl.save_local_model, or 'toy'")
    src.add_argument("--out", required=True, help="output folder (the run's store, labels, "
                     "exports)")


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


def _add_ray(p: Any) -> None:
    ray = p.add_argument_group("several GPUs or nodes (Ray)")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="label on Ray actors, one per GPU: 'auto' joins the cluster started "
                        "with `ray start`, ray://HOST:10001 a remote one; without ADDRESS a "
                        "local instance (pip install 'saelens-tokenlabel[ray]')")
    ray.add_argument("--ray-workers", type=int, metavar="N",
                   help="Ray actors (default: one per GPU; one on CPU)")
    ray.add_argument("--ray-gpus-per-worker", type=float, metavar="G",
                   help="GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0)")


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


def _load_model(args: argparse.Namespace, sae: SAE[Any], device: str) -> Any:
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


TSV_COLUMNS = ("feature", "status", "label", "probability", "score", "verdict", "heldout_low",
               "heldout_high", "reason")
"""The columns of ``labels.tsv``: `score` is the held-out balanced accuracy (else the
training one), `heldout_low`/`heldout_high` its credible bounds, `reason` the verdict's."""


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _write_tsv(labels: Any, path: Path) -> Path:
    lines = ["\t".join(TSV_COLUMNS)]
    for f in labels:
        r = labels[f]
        v = r.verdict
        cells = [str(f), r.status, r.label, f"{r.probability:.4f}", _num(r.score),
                 v.value if v else "", _num(v.low if v else None),
                 _num(v.high if v else None), v.reason if v else ""]
        lines.append("\t".join(c.replace("\t", " ").replace("\n", " ") for c in cells))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def print_summary(labels: Any) -> None:
    """What `tokenlabel label` prints: counts by verdict, then each label with its verdict and
    held-out evidence before its probability (p says how concentrated the label is, not
    whether it is right)."""
    counts = {k: len(v) for k, v in labels.by_verdict().items()}
    print(f"labeled:      {len(labels)} features {counts}")
    for f in labels:
        r = labels[f]
        if r.status != "ok":
            continue
        v = r.verdict
        print(f"  {f:>6}  {r.label!r:20}  {v.short() if v else '':32}  p={r.probability:.3f}"
              f"{'' if r.converged else '  (not converged)'}"
              f"{'' if r.method == 'descended' else f'  [{r.method}]'}")


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


def cmd_label(args: argparse.Namespace) -> int:
    # The configs first (file, then flags): a bad value fails before any model loads.
    settings = settings_from(args)
    # Imported here, not above: building the parser must not load torch or SAELens.
    from ..evaluator.loading import default_device
    from ..run.pipeline import label_sae_features
    from ..sae.corpus import Corpus

    ray = _ray_config(args)
    device = args.device or default_device()
    cpu_run(args, device)
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
    labels = label_sae_features(sae, model, evaluator, corpus, features, settings.label,
                                cache=settings.cache, examples=settings.examples,
                                features_per_batch=args.features_per_batch, run_dir=out,
                                checkpoint=legacy, order=args.order, ray=ray,
                                amortize=settings.amortize, scores=settings.scores)
    print_summary(labels)
    _write_outputs(labels, sae, out, args)
    return 0


def _write_outputs(labels: Any, sae: SAE[Any], out: Path, args: argparse.Namespace) -> None:
    """The output files, from labels safe in the run store already: one that cannot be
    written does not stop the others (`run.outputs.Outputs`); a missing Neuronpedia id is a
    warning, not a failure."""
    from safetensors import SafetensorError

    store = out / RUN_STORE_FILENAME
    outputs = Outputs(out, store, len(labels))
    sidecar = outputs.write(SIDECAR_FILENAME, lambda: labels.save(out / SIDECAR_FILENAME))
    tsv = outputs.write(LABELS_TSV, lambda: _write_tsv(labels, out / LABELS_TSV))
    print("written:      " + ", ".join(str(p) for p in (tsv, sidecar, store) if p))
    try:
        shared = labels.only_explained() if args.only_explained else labels
        n = outputs.write(NEURONPEDIA_JSONL, lambda: shared.to_neuronpedia(
            out / NEURONPEDIA_JSONL, args.neuronpedia_id))
        if n is not None:
            print(f"neuronpedia:  {n} explanation records in {out / NEURONPEDIA_JSONL}")
    except ValueError as err:
        # No Neuronpedia id: the SAE's own, unpublished, the usual case; every label is
        # written, so the run succeeded. The message says how to give one.
        print(f"neuronpedia:  not written: {err}")
    if args.save_sae:
        labels.attach(sae)
        if outputs.write("sae/", lambda: sae.save_model(out / "sae"),
                         errors=(OSError, SafetensorError)) is not None:
            print(f"sae:          {out / 'sae'} (labels in cfg.json metadata and the sidecar)")
    outputs.check()


