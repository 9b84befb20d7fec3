"""The paper's loss (eq. 3-6): BCE accuracy + λ_ent·H(p) + λ_kl·KL(p‖q), each term kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float

from .soft_label import KL_LOG_Q_FLOOR, entropy


def answer_margin(
    logits: Float[torch.Tensor, "batch d_vocab"], yes_id: int, no_id: int
) -> Float[torch.Tensor, " batch"]:
    """logit("1") - logit("0"): the two-way softmax's prediction m = sigmoid(margin)."""
    return logits[:, yes_id] - logits[:, no_id]


def accuracy_loss(
    logits: Float[torch.Tensor, "batch d_vocab"],
    targets: Float[torch.Tensor, " batch"],
    yes_id: int,
    no_id: int,
    prediction: str = "two_way",
) -> Float[torch.Tensor, " batch"]:
    """Per-row accuracy loss. `two_way` is the paper's eq. 4; `full_vocab` is the authors'
    code's cross-entropy over the whole vocabulary with "1"/"0" as the target token."""
    if prediction == "two_way":
        return F.binary_cross_entropy_with_logits(
            answer_margin(logits, yes_id, no_id), targets, reduction="none"
        )
    target_ids = torch.where(targets > 0.5, yes_id, no_id).long()
    return F.cross_entropy(logits, target_ids, reduction="none")


@dataclass
class LossTerms:
    """Per-feature loss terms of one step, each ``[n_features]``."""

    total: torch.Tensor
    accuracy: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor
    p: torch.Tensor
    """The label distribution the terms were computed at, ``[feat, slot, d_vocab]``."""


class LossWeights(NamedTuple):
    """λ_acc, λ_ent and λ_kl of eq. 6; λ_ent may be a per-feature tensor (its warm-up ramp)."""

    acc: float
    ent: float | torch.Tensor
    kl: float


def _mean_kl(
    p: Float[torch.Tensor, "feat slot d_vocab"],
    log_p: Float[torch.Tensor, "feat slot d_vocab"],
    row_feature: torch.Tensor,
    row_log_q: Float[torch.Tensor, "batch q_slot d_vocab"],
    counts: Float[torch.Tensor, " feat"],
) -> Float[torch.Tensor, " feat"]:
    """Each feature's KL(p‖q_row) summed over its rows (and q's slots), over `counts`.

    A feature's rows share its p, so the sum over rows is taken on q first:
    ``Σ_r Σ_v p (log p − log q_r) = Σ_v p (n·log p − Σ_r log q_r)``. The same sum as row by
    row (`soft_label.kl_to`), without a ``[rows, d_vocab]`` tensor in the backward pass: on a
    128k vocabulary that is most of the loss's cost. ``Σ_r log q_r`` needs no gradient."""
    n_q = row_log_q.shape[1]
    with torch.no_grad():
        lq = row_log_q.clamp_min(KL_LOG_Q_FLOOR).to(p.dtype)
        summed = torch.zeros(p.shape[0], n_q, p.shape[-1], dtype=p.dtype, device=p.device)
        summed.index_add_(0, row_feature, lq)
        n_rows = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device).index_add_(
            0, row_feature, torch.ones_like(row_feature, dtype=p.dtype))
    fl = torch.where(torch.isfinite(log_p[:, :n_q]), log_p[:, :n_q],
                     torch.zeros_like(log_p[:, :n_q]))
    kl = (p[:, :n_q] * (n_rows[:, None, None] * fl - summed)).sum((-1, -2))
    return kl.to(counts.dtype) / counts


def label_loss(
    log_p: Float[torch.Tensor, "feat slot d_vocab"],
    row_feature: torch.Tensor,
    row_acc: Float[torch.Tensor, " batch"],
    row_log_q: Float[torch.Tensor, "batch q_slot d_vocab"] | Float[torch.Tensor, "batch d_vocab"],
    counts: Float[torch.Tensor, " feat"],
    weights: LossWeights,
    with_entropy: bool = True,
) -> LossTerms:
    """Per-feature loss: row terms averaged over that feature's rows, plus H(p).

    `counts` is each feature's number of rows in the *whole* batch, so that the terms of
    micro-batches of one batch add up to the batch's terms (entropy: add it in one
    micro-batch only). Features never share a term, so summing `total` over features gives
    each feature's v the gradient it would get alone. H is summed over label slots. KL is
    summed over the slots `row_log_q` covers: ``row_log_q[:, j]`` is the evaluator's
    next-token distribution at slot j given the prompt before it (for j > 0: given the hard
    argmax tokens of slots < j, see `forward.conditional_log_q`). A 2-D `row_log_q` is slot 0's.
    """
    p = log_p.exp()
    counts = counts.to(device=row_acc.device, dtype=row_acc.dtype).clamp_min(1)
    acc = torch.zeros_like(counts).index_add_(0, row_feature, row_acc) / counts
    if row_log_q.ndim == 2:
        row_log_q = row_log_q[:, None]
    kl = _mean_kl(p, log_p, row_feature, row_log_q, counts)
    if with_entropy:
        ent = entropy(p, log_p).sum(-1).to(counts.dtype)
    else:
        ent = torch.zeros_like(counts)
    lambda_ent = weights.ent
    if isinstance(lambda_ent, torch.Tensor):
        lambda_ent = lambda_ent.to(device=ent.device, dtype=ent.dtype)
    total = weights.acc * acc + lambda_ent * ent + weights.kl * kl
    return LossTerms(total, acc, ent, kl, p)
