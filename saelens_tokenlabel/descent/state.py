"""What an attempt works on and where it stands: `FeatureJob` (one feature to label) and
`AttemptState` (its progress in one attempt). Plain records, shared by the attempt loop
(`attempts`) and the hard-label scoring (`hardlabel`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

from ..records.result import Trajectory
from .sampler import BalancedSampler, ConfusionSampler


@dataclass
class FeatureJob:
    """One feature to label: which shared examples it rates, and its binary targets."""

    name: str | int
    example_ids: torch.Tensor
    """Indices into the shared list of encoded examples (and the prefix cache)."""
    targets: torch.Tensor
    """1.0 where the feature is active on that example, else 0.0."""
    heldout_ids: torch.Tensor | None = None
    """Examples never optimised on nor selected by, only used to score the chosen label."""
    heldout_targets: torch.Tensor | None = None
    validation_ids: torch.Tensor | None = None
    """Examples never optimised on, used to choose between attempts (`splits`)."""
    validation_targets: torch.Tensor | None = None
    words: tuple[str, ...] = ()
    """The word of each training example (counting the distinct words a label gets wrong)."""
    error_eligible: torch.Tensor | None = None
    """Refinement: the training examples the confusion sampler may draw as errors (None: all).
    An error no label on the short-list fixes is left out, so that a feature whose evaluator
    errs on common words does not spend a quarter of every batch on them."""
    prediction: torch.Tensor | None = None
    """Refinement: the starting label's ratings of the training examples ("1" or not); the
    confusion sampler's buckets are theirs for the whole attempt (`ConfusionSampler.freeze`)."""
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
