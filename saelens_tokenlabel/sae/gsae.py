"""The g-SAE architecture (Olmo et al., "Features that Make a Difference"), for SAELens.

A g-SAE is a TopK SAE whose k latents are chosen by the pre-activation weighted by the
downstream gradient: with ``z = W_enc (x − b_dec) + b_enc`` (SAELens's TopK pre-activation) and
``g = ∂L/∂x`` the gradient of the subject model's loss at the SAE's hook, the latents with the k
largest ``z ∘ |W_decᵀ g|`` are selected, and each selected latent keeps ``ReLU(z)`` (a selected
latent with a negative pre-activation is 0, as in TopK). Encoding therefore needs a forward pass
of the subject model to its loss and a backward pass to the hook: `GSAE.encode(x, grad=g)`.
Without `grad` it raises, saying how to get one; the activation cache
(`activations.encode_contexts`) computes it for every SAE that `needs_gradient`.

What the paper leaves open, and what this implementation does (`GSAEConfig`):

* **the loss** (``gradient_loss``): ``next_token_ce_sum``, the subject model's next-token
  cross-entropy summed over the real tokens of the context (padding excluded). The gradient at
  a position then collects its effect on its own prediction and on every later one; the sum
  (not the mean) keeps a context's gradients independent of the other contexts in a batch and
  of its length's normalisation, which never changes the ranking within a token anyway;
* **the sign** (``gradient_abs``): the paper's ``|W_decᵀ g|`` by default; False ranks by the
  signed product;
* **``W_decᵀ g``** is the vector-Jacobian product of ``decode`` (``g @ W_dec.T`` for a plain
  decoder; activation normalisation and ``hook_z`` reshaping included);
* **ties** go to the larger ``z`` (TopK's own choice), then to the lower latent index
  (``torch.topk``'s order on equal scores is not specified; we sort stably). This matters at
  the last position of every context: it feeds no next-token prediction, so its gradient is
  exactly 0 and every score is ``z · 0 = 0``. Ranked by index alone, latents 0..k-1 would fire
  on every context end, whatever they mean; ranked by ``z``, the g-SAE falls back on the TopK
  SAE it refines where the gradient says nothing. (The alternative, leaving those positions
  out of the cache, would make them look inactive to the examples instead of unknown, and
  would leave `GSAE.encode` itself ill-defined there for every other user.)

**Forward and splicing.** ``GSAE.forward(x)`` (what SAELens's splicing tools call, e.g.
``HookedSAETransformer.run_with_saes``) encodes without a gradient argument, so it raises
`GradientRequiredError` unless a gradient is supplied: ``with supplied_gradient(sae, model,
tokens): model.run_with_saes(tokens, saes=[sae])`` computes the clean model's gradient at the
SAE's hook for those tokens first and lets ``forward`` use it.

`register` adds the architecture to SAELens's registry (``"gsae"``), so `SAE.load_from_disk`
and `SAE.from_dict` build a `GSAE`; importing `saelens_tokenlabel` does it (`run.plugin`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from jaxtyping import Float, Int

from .hooks import HookSpec, activation_and_grad

if TYPE_CHECKING:
    from sae_lens import SAE

ARCHITECTURE = "gsae"
GRADIENT_LOSSES = ("next_token_ce_sum",)
_CLASSES: dict[str, Any] = {}


class GradientRequiredError(ValueError):
    """A g-SAE was asked to encode without the gradient its selection needs."""


def needs_gradient(sae: SAE[Any]) -> bool:
    """Whether `sae` selects its latents by the gradient at its hook (a g-SAE)."""
    return bool(getattr(sae, "NEEDS_GRADIENT", False))


def gradient_definition(sae: SAE[Any]) -> dict[str, Any] | None:
    """What the gradient a g-SAE needs is of (for the activation cache's fingerprint)."""
    if not needs_gradient(sae):
        return None
    return {"loss": sae.cfg.gradient_loss, "abs": bool(sae.cfg.gradient_abs)}


def _classes() -> dict[str, Any]:
    """`GSAEConfig` and `GSAE`, built on first use (SAELens loads torch and TransformerLens)."""
    if _CLASSES:
        return _CLASSES
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    @dataclass
    class GSAEConfig(TopKSAEConfig):
        """A TopK SAE config plus what the gradient selection needs (module docstring)."""

        gradient_loss: str = "next_token_ce_sum"
        """The loss whose gradient at the hook selects the latents (`GRADIENT_LOSSES`)."""
        gradient_abs: bool = True
        """Rank latents by ``z ∘ |W_decᵀ g|`` (the paper's); False: by ``z ∘ W_decᵀ g``."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.gradient_loss not in GRADIENT_LOSSES:
                raise ValueError(f"gradient_loss must be one of {GRADIENT_LOSSES}, got "
                                 f"{self.gradient_loss!r}")
            if self.rescale_acts_by_decoder_norm:
                raise ValueError("a g-SAE with rescale_acts_by_decoder_norm is not supported; "
                                 "fold the decoder norm into the weights first")
            if self.normalize_activations not in ("none", "expected_average_only_in"):
                # Their run-time norm is state that `decode` consumes: the selection's
                # vector-Jacobian product through `decode` would eat it.
                raise ValueError(f"a g-SAE with normalize_activations="
                                 f"{self.normalize_activations!r} is not supported")

        @classmethod
        def architecture(cls) -> str:
            return ARCHITECTURE

    class GSAE(TopKSAE):
        """TopK whose selection is weighted by the gradient at the hook (module docstring)."""

        NEEDS_GRADIENT = True
        supplied_grad: torch.Tensor | None = None
        """The gradient `supplied_gradient` lends to calls without one (`forward`)."""

        def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
            """The g-SAE activation of `x`; `grad` is ``∂L/∂x`` at the hook, of `x`'s shape.
            Without it (as `forward` and SAELens's splicing call it), the gradient a
            `supplied_gradient` block holds, else `GradientRequiredError`."""
            if grad is None:
                grad = _supplied(self, x)
            return self.hook_sae_acts_post(select(self, self.pre_activation(x), grad))

        def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
            """z: SAELens's TopK pre-activation (input processing included)."""
            sae_in = self.process_sae_in(x)
            return self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)

    # Module-level names, so that instances pickle (`__getattr__` below builds them on load).
    for cls in (GSAEConfig, GSAE):
        cls.__qualname__ = cls.__name__
        cls.__module__ = __name__
    _CLASSES.update(GSAEConfig=GSAEConfig, GSAE=GSAE)
    return _CLASSES


def __getattr__(name: str) -> Any:
    if name in ("GSAE", "GSAEConfig"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _supplied(sae: SAE[Any], x: torch.Tensor) -> torch.Tensor:
    """The gradient `supplied_gradient` holds for `x` (same number of values), or the error
    that says how to give one."""
    # A GSAE's attribute (the class is made lazily, `_classes`), read off the SAE it is.
    grad: torch.Tensor | None = getattr(sae, "supplied_grad", None)
    if grad is None:
        raise GradientRequiredError(
            "A g-SAE selects its k latents by z ∘ |W_decᵀ g|, g the gradient of the subject "
            "model's loss at the hook, so encode/forward need it: call encode(x, grad=g), or "
            "splice it inside `with saelens_tokenlabel.sae.gsae.supplied_gradient(sae, model, "
            "tokens):` (SAELens's run_with_saes and friends). sae.label_features and "
            "`tokenlabel label` compute it for you.")
    if grad.numel() != x.numel():
        raise GradientRequiredError(
            f"The supplied gradient has shape {tuple(grad.shape)} but the g-SAE was called on "
            f"{tuple(x.shape)}: `supplied_gradient` was given other tokens than the model runs "
            "on. Pass the same tokens to both.")
    return grad.reshape(x.shape)


@contextmanager
def supplied_gradient(sae: SAE[Any], model: Any, tokens: Int[torch.Tensor, "batch pos"],
                      attention_mask: Int[torch.Tensor, "batch pos"] | None = None
                      ) -> Iterator[torch.Tensor]:
    """Run a g-SAE's `forward` (SAELens's splicing: ``model.run_with_saes(tokens,
    saes=[sae])``, ``model.add_sae(sae)``) inside this block: it computes ``∂L/∂x`` of the
    clean `model` (no SAE spliced) at the SAE's hook for `tokens` (L: `gradient_loss`, the
    summed next-token loss of the real tokens, `attention_mask`'s ones; default all), and
    every call of ``sae.encode``/``sae.forward`` without ``grad`` uses it. Yields the gradient
    (``[batch, pos, ...]``, the hook's head selected).

    The model must not have the g-SAE spliced in while the block starts (the gradient is the
    clean model's, as in training); splice it inside the block. The gradient belongs to
    `tokens`: run the model on the same tokens."""
    if not needs_gradient(sae):
        raise TypeError(f"supplied_gradient is for g-SAEs; {type(sae).__name__} selects its "
                        "latents without a gradient.")
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
    _, grad = activation_and_grad(model, HookSpec.from_sae(sae), tokens, mask)
    before = sae.supplied_grad
    sae.supplied_grad = grad
    try:
        yield grad
    finally:
        sae.supplied_grad = before


def decoder_projection(sae: SAE[Any], grad: torch.Tensor, latent_shape: torch.Size
                       ) -> Float[torch.Tensor, "n d_sae"]:
    """``W_decᵀ g`` per row, of the latents' shape: the vector-Jacobian product of
    ``sae.decode`` at `grad` (which has the hook's shape, e.g. ``[n, heads, d_head]``)."""
    with torch.enable_grad():
        z = torch.zeros(latent_shape, device=sae.W_dec.device, dtype=sae.W_dec.dtype,
                        requires_grad=True)
        out = sae.decode(z)
        g = grad.to(device=out.device, dtype=out.dtype).reshape(out.shape)
        (proj,) = torch.autograd.grad(out, z, grad_outputs=g)
    return proj


def select(sae: SAE[Any], z: Float[torch.Tensor, "n d_sae"], grad: torch.Tensor
           ) -> Float[torch.Tensor, "n d_sae"]:
    """The g-SAE activation: ReLU(z) on the k latents with the largest ``z ∘ |W_decᵀ g|``;
    equal scores go to the larger z, then to the lower index (module docstring: a zero
    gradient, as at the last position of a context, makes every score equal)."""
    proj = decoder_projection(sae, grad, z.shape).to(z.dtype)
    # + 0.0 turns the -0.0 of a negative z times a zero gradient into +0.0, which compares
    # equal anyway but would sort apart in a radix sort (CUDA).
    score = z * (proj.abs() if sae.cfg.gradient_abs else proj) + 0.0
    k = sae.cfg.k
    flat_z, flat_s = z.reshape(-1, z.shape[-1]), score.reshape(-1, z.shape[-1])
    vals, idx = flat_s.topk(k, dim=-1)
    # The chosen set is unique unless scores tie at the k-th place; only those rows (a
    # context's last position, where every score is 0) need the tie rule, by two stable sorts:
    # by z, then by the score.
    tied = (flat_s >= vals[:, -1:]).sum(-1) > k
    if bool(tied.any()):
        rows = tied.nonzero().flatten()
        by_z = torch.sort(flat_z[rows], dim=-1, descending=True, stable=True).indices
        order = torch.sort(flat_s[rows].gather(-1, by_z), dim=-1, descending=True,
                           stable=True).indices
        idx = idx.clone()
        idx[rows] = by_z.gather(-1, order[:, :k])
    out = torch.zeros_like(flat_z).scatter(-1, idx, flat_z.gather(-1, idx).relu())
    return out.reshape(z.shape)


def gsae_classes() -> tuple[type, type]:
    """(`GSAE`, `GSAEConfig`)."""
    c = _classes()
    return c["GSAE"], c["GSAEConfig"]


def register() -> None:
    """Register ``"gsae"`` with SAELens (idempotent; both the class and its config)."""
    from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class

    if ARCHITECTURE in SAE_CLASS_REGISTRY:
        return
    gsae, config = gsae_classes()
    register_sae_class(ARCHITECTURE, gsae, config)


class _GradientEncoder(Protocol):
    """What a g-SAE's `encode` takes: the activations and the gradient at its hook."""

    def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor: ...


def encode_with(sae: SAE[Any], x: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``sae.encode(x)``; a g-SAE's ``encode(x, grad=grad)`` when `grad` is given (its TopK
    selects by the gradient). The one place the two calls differ."""
    if grad is not None and needs_gradient(sae):
        return cast(_GradientEncoder, sae).encode(x, grad=grad)
    return sae.encode(x)
