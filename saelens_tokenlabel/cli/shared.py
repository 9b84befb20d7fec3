"""What `tokenlabel synthetic` and `tokenlabel label` share: the evaluator and LabelConfig's
flags."""

from __future__ import annotations

import argparse
from typing import Any

from ..records.config import LabelConfig
from ..run.threads import WAIT_POLICIES, set_threads, set_wait_policy
from .flags import ConfigFlags

TOY = "toy"
"""`--evaluator toy`: the bundled offline toy evaluator."""
DTYPES = ("float32", "bfloat16", "float16", "float64")
"""`--dtype` choices."""

LABEL_FLAGS = ConfigFlags(
    LabelConfig, title="label config (LabelConfig; synthetic: the dataset's paper preset)",
    renames={name: f"--warm-start-{name.replace('_', '-')}"
             for name in ("top_k", "scale", "temperature", "casefold", "top_mass")})
"""LabelConfig's flags (``--lr``, ``--steps``, ``--no-use-cache``, ...); the nested
`WarmStartConfig`'s as ``--warm-start-top-k`` and so on."""


BACKEND_HELP = ("how the {what} runs: 'hooked' (TransformerLens's HookedTransformer, the "
                "default) or 'bridge' (a TransformerLens 3 TransformerBridge around the Hugging "
                "Face model, for architectures HookedTransformer lacks)")


def add_import_flag(p: Any) -> None:
    """``--import MODULE``: modules imported before the command runs, so that what they
    register (a scorer, an explanation reader) can be named."""
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this Python module first (repeat for several): it may "
                        "register its own scorers or explanation readers")


def import_modules(names: list[str]) -> None:
    """Import each module `--import` names; a missing one is a one-line error."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(f"--import {name}: no module {err.name!r} on the Python path; "
                             "install it, or run from the folder that holds it.") from None


def add_thread_flags(p: Any) -> None:
    """``--threads N`` and ``--omp-wait-policy``: how a CPU run uses the cores
    (`run.threads`)."""
    p.add_argument("--threads", type=_positive, metavar="N",
                   help="torch's intra-op threads on a CPU run (default: OMP_NUM_THREADS if "
                        "set, else one per core this process may use)")
    p.add_argument("--omp-wait-policy", choices=WAIT_POLICIES,
                   help="how OpenMP's threads wait between operations: 'passive' (sleep; the "
                        "default unless OMP_WAIT_POLICY is set: a busy machine does not stall "
                        "the run), 'active' (spin) or 'unset' (OpenMP's own default)")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def thread_argv(args: argparse.Namespace) -> list[str]:
    """The thread flags given, to pass on to another command."""
    out = [] if args.threads is None else ["--threads", str(args.threads)]
    return out + ([] if args.omp_wait_policy is None
                  else ["--omp-wait-policy", args.omp_wait_policy])


def prepare_threads(args: argparse.Namespace) -> None:
    """Before the command imports torch: OpenMP's wait policy (read once, when torch loads
    it), for every command that runs a model (on a GPU only the host's few operations
    wait; harmless)."""
    if hasattr(args, "omp_wait_policy"):
        set_wait_policy(args.omp_wait_policy)


def cpu_run(args: argparse.Namespace, device: str) -> None:
    """Once the device is known: a CPU run's intra-op threads (`run.threads.set_threads`;
    the wait policy was set before torch loaded, `prepare_threads`)."""
    if str(device).startswith("cpu"):
        set_threads(args.threads)


def add_evaluator_backend(p: Any) -> None:
    """``--evaluator-backend {hooked,bridge}``."""
    p.add_argument("--evaluator-backend", choices=("hooked", "bridge"), default="hooked",
                   help=BACKEND_HELP.format(what="evaluator"))


def load_evaluator(name: str, device: str | None, dtype: str | None,
                   backend: str = "hooked") -> Any:
    """The evaluator `--evaluator NAME` names: 'toy', a folder from `save_local_model`, or a
    model name for HookedTransformer.from_pretrained (a Hugging Face name or folder for
    TransformerBridge.boot_transformers with ``backend="bridge"``)."""
    # Imported here, not above: `tokenlabel --help` and `status` must not load torch.
    from ..evaluator.loading import load_evaluator_model
    from ..evaluator.model import Evaluator

    if name == TOY:
        from ..toy import load_toy_evaluator

        return load_toy_evaluator(device=device or "cpu", backend=backend)
    import torch

    torch_dtype = getattr(torch, dtype) if dtype else None
    return Evaluator(load_evaluator_model(name, device=device, dtype=torch_dtype,
                                          backend=backend))
