"""What an attempt works on and where it stands: `FeatureJob` (one feature to label) and
`AttemptState` (its progress in one attempt). Plain records, shared by the attempt loop
(`attempts`) and the hard-label scoring (`hardlabel`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

from ..result import Trajectory
from ..sampler import BalancedSampler, ConfusionSampler


@dataclass
class FeatureJob:
    """One feature to label: which shared examples it rates, and its binary targets."""

    name: str | int
    example_ids: torch.Tensor
    """Indices into the shared list of encoded examples (and the prefix cache)."""
    targets: torch.Tensor
    """1.0 where the feature is active on that example, else 0.0."""
    heldout_ids: torch.Tensor | None = None
    """Examples never optimised on, only used to score the final label."""
    heldout_targets: torch.Tensor | None = None
    threshold: float | None = None
    threshold_rule: str = ""
    init_logits: Float[torch.Tensor, "slot d_vocab"] | None = None
    """Initial v (e.g. the decoder-direction warm start); missing slots start at 0."""


@dataclass
class AttemptState:
    """One feature's progress in one attempt."""

    job: FeatureJob
    sampler: BalancedSampler | ConfusionSampler
    total_steps: int
    """Steps the attempt may run for this feature (its own schedule's length)."""
    trajectory: Trajectory
    steps: int = 0
    streak: int = 0
    """Consecutive steps at which every slot's top token held `convergence_mass`."""
    converged_step: int | None = None
    done: bool = False
    final_p: torch.Tensor | None = None
    final_v: torch.Tensor | None = None
    last_terms: dict[str, float] | None = None
