"""Where an SAE reads the subject model, and how to run the model just that far.

The hook, head index and position slice come from `sae.cfg.metadata`, as SAELens's
`ActivationsStore` reads them; `stop_at_layer` ends the forward pass at the hook's block.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from ..records.errors import HookError

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge

    SubjectModel: TypeAlias = HookedTransformer | TransformerBridge
    """A subject model: a HookedTransformer or a TransformerLens 3 TransformerBridge."""


@dataclass(frozen=True)
class HookSpec:
    """The SAE's input: hook name, optional head, and how far the model must run."""

    hook_name: str
    """TransformerLens hook name, e.g. ``blocks.8.hook_resid_pre``."""
    head_index: int | None
    """Head to take from a per-head hook (``hook_z``, ``hook_q`` ...), or None."""
    stop_at_layer: int | None
    """`HookedTransformer.forward(stop_at_layer=...)`: blocks from this one on never run."""
    seqpos_slice: tuple[int | None, ...]
    """Positions (of each context) the SAE was trained on; others are not encoded."""

    @classmethod
    def from_sae(cls, sae: SAE[Any]) -> HookSpec:
        from sae_lens.util import extract_stop_at_layer_from_tlens_hook_name

        meta = sae.cfg.metadata
        name = meta.hook_name
        if not name:
            raise HookError(
                "The SAE's cfg.metadata.hook_name is not set, so it is unknown where it reads "
                "the model. Set sae.cfg.metadata.hook_name = 'blocks.<L>.hook_resid_pre' (or "
                "wherever it was trained)."
            )
        stop = extract_stop_at_layer_from_tlens_hook_name(name)
        if stop is None and name.startswith("hook_"):
            stop = 0  # hook_embed / hook_pos_embed / hook_tokens: the embedding only
        head = meta.hook_head_index
        seqpos = tuple(meta.seqpos_slice) if meta.seqpos_slice else (None,)
        return cls(name, None if head is None else int(head), stop, seqpos)

    def check(self, model: SubjectModel) -> None:
        if self.hook_name not in model.hook_dict:
            near = similar_hooks(self.hook_name, model.hook_dict)
            hint = f" Similar hooks it has: {', '.join(near)}." if near else ""
            raise HookError(
                f"The SAE reads hook {self.hook_name!r}, which model "
                f"{model.cfg.model_name!r} (n_layers={model.cfg.n_layers}) does not have."
                f"{hint} Is this the model the SAE was trained on "
                "(sae.cfg.metadata.model_name)? If the name is wrong, set "
                "sae.cfg.metadata.hook_name to the hook it was trained on."
            )

    def position_mask(self, length: int) -> torch.Tensor:
        """True at the positions of a ``length``-token context the SAE reads."""
        keep = torch.zeros(length, dtype=torch.bool)
        keep[slice(*self.seqpos_slice)] = True
        return keep


def similar_hooks(name: str, hook_names: Iterable[str], n: int = 5) -> list[str]:
    """Up to `n` hook names close to `name` (a typo, another layer, a TL version's renaming)."""
    names = sorted(hook_names)
    near = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if len(near) < n:
        # Same hook kind in other layers: ``blocks.12.hook_resid_pre`` on a 6-layer model.
        kind = name.rsplit(".", 1)[-1]
        near += [h for h in names if h.endswith("." + kind) and h not in near][: n - len(near)]
    return near


@torch.no_grad()
def run_to_hook(
    model: SubjectModel,
    spec: HookSpec,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos *d"]:
    """The activation at the SAE's hook (its head selected), running no block past it."""
    grabbed: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> None:  # noqa: ARG001
        grabbed["act"] = act.detach()

    model.run_with_hooks(
        tokens,
        attention_mask=attention_mask,
        stop_at_layer=spec.stop_at_layer,
        return_type=None,
        fwd_hooks=[(spec.hook_name, grab)],
    )
    if "act" not in grabbed:
        raise HookError(f"Hook {spec.hook_name!r} did not fire in the forward pass "
                        f"(stop_at_layer={spec.stop_at_layer}).")
    act = grabbed["act"]
    if spec.head_index is not None:
        if act.ndim != 4:
            raise HookError(
                f"The SAE asks for head {spec.head_index} of {spec.hook_name!r}, but that hook "
                f"has shape {tuple(act.shape)} (no head dimension)."
            )
        if not -act.shape[2] <= spec.head_index < act.shape[2]:
            raise HookError(
                f"The SAE asks for head {spec.head_index} of {spec.hook_name!r}, but that hook "
                f"has {act.shape[2]} heads (0..{act.shape[2] - 1}). Check "
                "sae.cfg.metadata.hook_head_index."
            )
        act = act[:, :, spec.head_index]
    return act


def activation_and_grad(
    model: SubjectModel, spec: HookSpec, tokens: Int[torch.Tensor, "b pos"],
    mask: Int[torch.Tensor, "b pos"],
) -> tuple[Float[torch.Tensor, "b pos *d"], Float[torch.Tensor, "b pos *d"]]:
    """The hook activation ``x`` and ``grad_x L`` (L: summed next-token loss of real tokens),
    with the SAE's head selected. The model's parameters get no gradient."""
    grabbed: dict[str, torch.Tensor] = {}

    def leaf(act: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        act = act.detach().requires_grad_(True)
        grabbed["x"] = act
        return act

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, attention_mask=mask, return_type="logits",
                                      fwd_hooks=[(spec.hook_name, leaf)])
        if "x" not in grabbed:
            raise HookError(f"Hook {spec.hook_name!r} did not fire in the forward pass.")
        target = tokens[:, 1:]
        # The loss in at least fp32 (float64 models keep float64: exactness tests).
        wide = logits[:, :-1].flatten(0, 1)
        wide = wide.to(torch.promote_types(wide.dtype, torch.float32))
        nll = F.cross_entropy(wide, target.flatten(),
                              reduction="none").view(target.shape)
        loss = (nll * mask[:, 1:].to(nll.dtype)).sum()
        (grad,) = torch.autograd.grad(loss, grabbed["x"])
    x = grabbed["x"].detach()
    if spec.head_index is not None:
        if x.ndim != 4:
            raise HookError(f"The SAE asks for head {spec.head_index} of {spec.hook_name!r}, "
                            f"but that hook has shape {tuple(x.shape)} (no head dimension).")
        x, grad = x[:, :, spec.head_index], grad[:, :, spec.head_index]
    return x, grad


def to_sae_input(
    sae: SAE[Any], act: Float[torch.Tensor, " n *d"], hook_name: str
) -> Float[torch.Tensor, " n *d"]:
    """Shape per-token activations as `sae.encode` expects, checking the width."""
    if act.ndim == 3 and not getattr(sae, "hook_z_reshaping_mode", False):
        act = act.reshape(act.shape[0], -1)  # heads x d_head, as SAELens's store flattens
    width = math.prod(act.shape[1:])
    if width != sae.cfg.d_in:
        raise HookError(
            f"Hook {hook_name!r} gives {width} values per token but the SAE's d_in is "
            f"{sae.cfg.d_in}. Is this the model (and head) the SAE was trained on?"
        )
    return act.to(sae.device)
