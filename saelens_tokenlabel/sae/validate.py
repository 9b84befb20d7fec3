"""Up-front checks of `label_sae_features`'s inputs, before any expensive work.

Each check fails with an error that names the problem and the fix: the SAE and the models
have the right types, the SAE's hook exists in the subject model (with similar hook names when
it does not), the hook's activation has the SAE's ``d_in`` values per token (found by running
the model on one token), and the evaluator can render the rating prompt (it has a chat
template). Problems that only show on the corpus are handled where they arise: an empty
corpus (`corpus.py`, `activations.py`), NaN/inf activations (`activations.py`, the
``nonfinite`` status), words the evaluator cannot spell (`render.py`), dead features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..evaluator.loading import tokenizer_of
from ..evaluator.model import Evaluator, EvaluatorError
from .activations import NonFiniteActivationError
from .hooks import HookError, HookSpec, run_to_hook, to_sae_input
from .subject import Subject

if TYPE_CHECKING:
    from sae_lens import SAE

    from .hooks import SubjectModel


def check_sae(sae: SAE[Any]) -> None:
    from sae_lens.saes.sae import SAE

    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a sae_lens SAE, got {type(sae).__name__}. Load one with "
                        "SAE.from_pretrained(release, sae_id) or SAE.load_from_disk(path).")


def check_model(model: Any) -> None:
    if not hasattr(model, "run_with_hooks") or getattr(model, "tokenizer", None) is None:
        raise TypeError(
            "model must be the subject HookedTransformer (with its tokenizer) the SAE was "
            f"trained on, got {type(model).__name__}. Load it with "
            "HookedTransformer.from_pretrained(sae.cfg.metadata.model_name)."
        )


def check_evaluator(evaluator: Any) -> Evaluator:
    """The evaluator as an `Evaluator` (a HookedTransformer is wrapped with the paper's
    prompt); an `EvaluatorError` says what is missing, e.g. a chat template."""
    if isinstance(evaluator, Evaluator):
        return evaluator
    if hasattr(evaluator, "run_with_hooks"):
        return Evaluator(evaluator)
    raise TypeError(f"evaluator must be an stl.Evaluator (or a HookedTransformer with a chat "
                    f"template), got {type(evaluator).__name__}.")


@torch.no_grad()
def check_d_in(subject: Subject) -> None:
    """Run the model on one token to the hook: its width must be the SAE's ``d_in``, and its
    values finite. On a mismatch, the error lists hooks of that layer that do fit."""
    model, sae, spec = subject.model, subject.sae, subject.hook
    tok = tokenizer_of(model)
    first = tok.bos_token_id if tok.bos_token_id is not None else 0
    tokens = torch.tensor([[int(first)]], device=model.W_E.device)
    act = run_to_hook(model, spec, tokens, torch.ones_like(tokens))
    try:
        x = to_sae_input(sae, act[0], spec.hook_name)
    except HookError as err:
        fits = _hooks_of_width(model, spec, tokens, int(sae.cfg.d_in))
        if fits:
            err.add_note(f"Hooks near it with {sae.cfg.d_in} values per token: "
                         f"{', '.join(fits)}.")
        raise
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteActivationError(
            f"The subject model gives NaN/inf at hook {spec.hook_name!r} already on one token. "
            f"Its weights or dtype ({x.dtype}) are broken: load it in float32 and check "
            "torch.isfinite on its parameters."
        )


def _hooks_of_width(model: SubjectModel, spec: HookSpec, tokens: torch.Tensor,
                    width: int) -> list[str]:
    layer = spec.stop_at_layer - 1 if spec.stop_at_layer else 0
    names = [h for h in model.hook_dict
             if h.startswith(f"blocks.{layer}.") or h.startswith("hook_")]
    try:
        _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=layer + 1)
    except Exception:  # only a hint for an error already being raised
        return []
    out = []
    # Residual-stream hooks first: where most SAEs read.
    names.sort(key=lambda h: ("resid" not in h, "_out" not in h))
    for name in names:
        if name in cache:
            shape = cache[name].shape[2:]
            if shape.numel() == width or (len(shape) == 2 and shape[1] == width):
                out.append(name + (" (one head)" if shape.numel() != width else ""))
    return out[:8]


def validate_inputs(sae: SAE[Any], model: Any, evaluator: Any) -> tuple[Subject, Evaluator]:
    """All up-front checks, cheapest first: the subject (its hook checked against the model,
    else similar hooks it does have) and the evaluator as an `Evaluator`."""
    check_sae(sae)
    check_model(model)
    evaluator = check_evaluator(evaluator)
    subject = Subject.of(model, sae)
    check_d_in(subject)
    return subject, evaluator


__all__ = [
    "EvaluatorError",
    "check_d_in",
    "check_evaluator",
    "check_model",
    "check_sae",
    "validate_inputs",
]
