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
* **ties** go to the lower latent index (``torch.topk``'s order on equal scores is not
  specified; we sort stably).

`register` adds the architecture to SAELens's registry (``"gsae"``), so `SAE.load_from_disk`
and `SAE.from_dict` build a `GSAE`; importing `saelens_tokenlabel` does it (`run.plugin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from jaxtyping import Float

ARCHITECTURE = "gsae"
GRADIENT_LOSSES = ("next_token_ce_sum",)
_CLASSES: dict[str, Any] = {}


class GradientRequiredError(ValueError):
    """A g-SAE was asked to encode without the gradient its selection needs."""


def needs_gradient(sae: Any) -> bool:
    """Whether `sae` selects its latents by the gradient at its hook (a g-SAE)."""
    return bool(getattr(sae, "NEEDS_GRADIENT", False))


def gradient_definition(sae: Any) -> dict[str, Any] | None:
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

        def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
            if grad is None:
                raise GradientRequiredError(
                    "A g-SAE selects its k latents by z ∘ |W_decᵀ g|, g the gradient of the "
                    "subject model's loss at the hook: call encode(x, grad=g). "
                    "saelens_tokenlabel.sae.hooks.activation_and_grad(model, spec, tokens, "
                    "mask) gives x and g; sae.label_features and `tokenlabel label` compute "
                    "them for you.")
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


def decoder_projection(sae: Any, grad: torch.Tensor, latent_shape: torch.Size
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


def select(sae: Any, z: Float[torch.Tensor, "n d_sae"], grad: torch.Tensor
           ) -> Float[torch.Tensor, "n d_sae"]:
    """The g-SAE activation: ReLU(z) on the k latents with the largest ``z ∘ |W_decᵀ g|``."""
    proj = decoder_projection(sae, grad, z.shape).to(z.dtype)
    score = z * (proj.abs() if sae.cfg.gradient_abs else proj)
    # Stable sort: equal scores go to the lower index, whatever topk's kernel does.
    idx = torch.sort(score, dim=-1, descending=True, stable=True).indices[..., : sae.cfg.k]
    return torch.zeros_like(z).scatter(-1, idx, z.gather(-1, idx).relu())


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


def encode_with(sae: Any, x: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """``sae.encode(x)``; a g-SAE's ``encode(x, grad=grad)`` when `grad` is given (its TopK
    selects by the gradient). The one place the two calls differ."""
    if grad is not None and needs_gradient(sae):
        return cast(_GradientEncoder, sae).encode(x, grad=grad)
    return sae.encode(x)
