"""The soft label: logits v over the evaluator's vocabulary, p = softmax(v), e = p @ W_E."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float

NEG_INF = float("-inf")
KL_LOG_Q_FLOOR = -1e4
"""log q below this is clamped in KL(p‖q): a q that underflowed to 0 gives a finite term."""


def label_log_probs(
    v: Float[torch.Tensor, "feat slot d_vocab"], mask: Bool[torch.Tensor, " d_vocab"] | None
) -> Float[torch.Tensor, "feat slot d_vocab"]:
    """log p = log_softmax(v), with tokens outside `mask` at -inf (probability exactly 0).

    v is kept in fp32 or wider, so the softmax never runs in the evaluator's bf16.
    """
    if mask is not None:
        v = v.masked_fill(~mask, NEG_INF)
    return torch.log_softmax(v, dim=-1)


def _finite(log_p: torch.Tensor) -> torch.Tensor:
    # p log p -> 0 as p -> 0. Replacing -inf by 0 here (not multiplying 0 by -inf) keeps
    # the backward pass free of NaN for masked or underflowed tokens.
    return torch.where(torch.isfinite(log_p), log_p, torch.zeros_like(log_p))


def label_embeddings(
    p: Float[torch.Tensor, "feat slot d_vocab"], W_E: Float[torch.Tensor, "d_vocab d_model"]
) -> Float[torch.Tensor, "feat slot d_model"]:
    """e = p @ W_E, in the evaluator's dtype (a one-hot p gives exactly the token's row)."""
    return p.to(W_E.dtype) @ W_E


def entropy(
    p: Float[torch.Tensor, "*batch d_vocab"], log_p: Float[torch.Tensor, "*batch d_vocab"]
) -> Float[torch.Tensor, "*batch"]:
    """H(p) = -sum p log p (0 log 0 = 0)."""
    return -(p * _finite(log_p)).sum(-1)


def kl_to(
    p: Float[torch.Tensor, "*batch d_vocab"],
    log_p: Float[torch.Tensor, "*batch d_vocab"],
    log_q: Float[torch.Tensor, "*batch d_vocab"],
) -> Float[torch.Tensor, "*batch"]:
    """KL(p || q) = sum p (log p - log q); terms with p = 0 contribute 0 whatever q is."""
    # A q underflowing to 0 (log q = -inf) is clamped so that p = 0 there gives 0, not NaN.
    return (p * (_finite(log_p) - log_q.clamp_min(KL_LOG_Q_FLOOR))).sum(-1)


def init_logits(
    n_features: int, n_slots: int, d_vocab: int, std: float, generator: torch.Generator | None
) -> Float[torch.Tensor, "feat slot d_vocab"]:
    v = torch.zeros(n_features, n_slots, d_vocab)
    if std > 0:
        v += std * torch.randn(v.shape, generator=generator)
    return v
