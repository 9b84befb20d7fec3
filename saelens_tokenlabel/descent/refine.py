"""Fixable errors, and the refinement that goes after them.

A converged label that scores 0.99 may still be the parent of the right one ("animal" for a
mammal feature) when the examples that tell the two apart (animals that are not mammals) are
rare: no split's balanced accuracy moves for three examples out of five hundred. So after an
attempt we look at the errors themselves: the training and validation examples the hard label
rates wrong. Validation too: when the few telling examples all land there, the training
examples cannot tell the two labels apart, and validation is the split whose job is to choose
between labels. The held-out split is never looked at: it only scores.

An error is *fixable* when a label on the attempt's short-list rates it right while rating a
sample of what the label already gets right just as well (a label that says "0" to everything
"fixes" every false positive, and is no label). The short-list is the tokens that held the most
probability during the attempt (`short_list`): the alternatives the descent itself weighed.
Errors no such label fixes are irreducible for this search (the evaluator's own mistakes on
common words, a noisy feature's random firings): they do not trigger a refinement, and a
refinement does not draw them into its error buckets.

The refinement is one more attempt, confusion-stratified (paper §4.1), warm-started from the
label and the labels that fix its errors, its error buckets holding only the fixable errors and
fixed for the whole attempt (`refine_job`), with `LabelConfig.refine_overrides`. Fixable
validation errors join its training examples, in the error buckets: when no training example
tells the labels apart, a warm start alone does not always hold against a prior that favours
the parent (the descent drifts back to it). The attempt's result is still scored on the
feature's own splits, and the held-out split, never seen, keeps the reported score unbiased.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float

from ..records.config import LabelConfig
from ..records.result import Trajectory
from .engine import StepContext
from .hardlabel import hard_label_margins
from .state import FeatureJob

MAX_ERRORS_CHECKED = 64
"""Errors rated under each candidate (a random subset beyond this; the rest stay eligible)."""
KEPT_SAMPLE = 16
"""Examples the label rates right, per class, that a candidate must rate right too."""


@dataclass(frozen=True)
class ErrorCheck:
    """What a label gets wrong on its training and validation examples, and which of it is
    fixable."""

    fixable: Bool[torch.Tensor, " n"]
    """Training examples the label rates wrong and a short-list label rates right."""
    irreducible: Bool[torch.Tensor, " n"]
    """Training errors checked that no short-list label fixes."""
    fixers: list[list[int]]
    """The short-list labels (token ids per slot) that fix some error and keep the sample."""
    validation_fixable: Bool[torch.Tensor, " m"] = field(
        default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    """Validation examples the label rates wrong and a short-list label rates right."""

    @property
    def n_fixable(self) -> int:
        """Fixable training errors."""
        return int(self.fixable.sum())

    @property
    def n_validation_fixable(self) -> int:
        """Fixable validation errors."""
        return int(self.validation_fixable.sum())

    @property
    def any_fixable(self) -> bool:
        """Some error, training or validation, is fixable: a refinement is worth running."""
        return self.n_fixable + self.n_validation_fixable > 0


def short_list(trajectory: Trajectory, label_ids: list[int], k: int) -> list[list[int]]:
    """Up to `k` alternative labels: `label_ids` with one slot changed to a token that held
    much probability in that slot during the attempt (most probability first)."""
    peak: dict[tuple[int, int], float] = {}
    for ids, probs in zip(trajectory.top_ids, trajectory.top_probs, strict=True):
        for slot, (row_ids, row_p) in enumerate(zip(ids, probs, strict=True)):
            for t, p in zip(row_ids, row_p, strict=True):
                if t != label_ids[slot] and p > peak.get((slot, t), 0.0):
                    peak[(slot, t)] = p
    ranked = sorted(peak, key=lambda st: (-peak[st], st))[:k]
    out = []
    for slot, t in ranked:
        alt = list(label_ids)
        alt[slot] = t
        out.append(alt)
    return out


def _rated_right(ctx: StepContext, rows: torch.Tensor, targets: torch.Tensor,
                 labels: list[list[int]]) -> Bool[torch.Tensor, "label n"]:
    """Whether each label rates each of the examples `rows` (ids of encoded examples, with
    their `targets`) right."""
    if not labels or not len(rows):
        return torch.zeros(len(labels), len(rows), dtype=torch.bool)
    ids = torch.tensor(labels).repeat_interleave(len(rows), 0)
    margins, _ = hard_label_margins(ctx, rows.repeat(len(labels)), ids)
    target = (targets > 0.5).repeat(len(labels))
    return ((margins.cpu() > 0) == target).reshape(len(labels), len(rows))


def _sample(mask: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    idx = torch.nonzero(mask).flatten()
    return idx[torch.randperm(len(idx), generator=gen)[:k]] if len(idx) > k else idx


def _validation(job: FeatureJob) -> tuple[torch.Tensor, torch.Tensor]:
    if job.validation_ids is None or job.validation_targets is None:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    return job.validation_ids, job.validation_targets


@torch.no_grad()
def check_errors(ctx: StepContext, job: FeatureJob, label_ids: list[int],
                 right: Bool[torch.Tensor, " n"], trajectory: Trajectory,
                 config: LabelConfig, validation_right: Bool[torch.Tensor, " m"] | None = None
                 ) -> ErrorCheck:
    """Which of the label's training and validation errors (`right`, `validation_right`: its
    ratings of each example) a short-list label fixes (module docstring).

    Cost: nothing without errors; else the errors (up to `MAX_ERRORS_CHECKED` per split)
    under each candidate, and a sample of `KEPT_SAMPLE` right training examples per class
    under the candidates that fix one."""
    val_ids, val_targets = _validation(job)
    val_wrong = (torch.zeros(len(val_ids), dtype=torch.bool) if validation_right is None
                 else ~validation_right)
    none, val_none = torch.zeros(len(right), dtype=torch.bool), torch.zeros_like(val_wrong)
    if right.all() and not val_wrong.any():
        return ErrorCheck(none, none, [], val_none)
    gen = torch.Generator().manual_seed(config.seed)
    errors = _sample(~right, MAX_ERRORS_CHECKED, gen)
    active = job.targets > 0.5
    kept = torch.cat([_sample(right & active, KEPT_SAMPLE, gen),
                      _sample(right & ~active, KEPT_SAMPLE, gen)])
    val_errors = _sample(val_wrong, MAX_ERRORS_CHECKED, gen)
    candidates = short_list(trajectory, label_ids, config.refine_candidates)
    fixed = _rated_right(ctx, torch.cat([job.example_ids[errors], val_ids[val_errors]]),
                         torch.cat([job.targets[errors], val_targets[val_errors]]), candidates)
    some = [c for c in range(len(candidates)) if fixed[c].any()]
    keeps = _rated_right(ctx, job.example_ids[kept], job.targets[kept],
                         [candidates[c] for c in some]).all(1)
    viable = [c for c, ok in zip(some, keeps.tolist(), strict=True) if ok]
    fixes = fixed[viable].any(0) if viable else torch.zeros(fixed.shape[1], dtype=torch.bool)
    fixable, irreducible, val_fixable = none.clone(), none.clone(), val_none.clone()
    fixable[errors[fixes[: len(errors)]]] = True
    val_fixable[val_errors[fixes[len(errors):]]] = True
    irreducible[errors] = True
    irreducible &= ~fixable
    return ErrorCheck(fixable, irreducible, [candidates[c] for c in viable], val_fixable)


def hint_logits(ids: list[int] | list[list[int]], d_vocab: int,
                vocab_mask: torch.Tensor | None) -> Float[torch.Tensor, "slot d_vocab"]:
    """Initial logits that give each slot's token (or tokens, shared equally) half the
    probability mass: a strong hint, not a verdict (the other allowed tokens share the
    rest)."""
    n_allowed = d_vocab if vocab_mask is None else int(vocab_mask.sum())
    slots = [[t] if isinstance(t, int) else list(dict.fromkeys(t)) for t in ids]
    init = torch.zeros(len(slots), d_vocab)
    for s, tokens in enumerate(slots):
        m = len(tokens)
        init[s, torch.tensor(tokens)] = math.log(max(2.0, (n_allowed - m) / m))
    return init


def refine_job(ctx: StepContext, job: FeatureJob, label_ids: list[int],
               right: Bool[torch.Tensor, " n"], check: ErrorCheck) -> FeatureJob:
    """The feature's job for a refinement of `label_ids`: warm-started from the label and the
    short-list labels that fix its errors (sharing half the mass in each slot, so that the
    descent, not the start, decides between them), with the label's ratings for the confusion
    sampler's first buckets and only the fixable errors eligible for the error buckets. The
    fixable validation errors are added to its training examples, as errors of the label."""
    val_ids, val_targets = _validation(job)
    more = check.validation_fixable
    if len(more) != len(val_ids):
        more = torch.zeros(len(val_ids), dtype=torch.bool)
    active = job.targets > 0.5
    more_active = val_targets[more] > 0.5
    slots = [[t, *(f[s] for f in check.fixers)] for s, t in enumerate(label_ids)]
    return dataclasses.replace(
        job, init_logits=hint_logits(slots, ctx.evaluator.d_vocab, ctx.vocab_mask),
        example_ids=torch.cat([job.example_ids, val_ids[more]]),
        targets=torch.cat([job.targets, val_targets[more]]),
        words=(*job.words, *([""] * int(more.sum()))) if job.words else (),
        prediction=torch.cat([torch.where(right, active, ~active), ~more_active]),
        error_eligible=torch.cat([~check.irreducible, torch.ones_like(more_active)]))


def refine_config(config: LabelConfig, overrides: dict) -> LabelConfig:
    """What a refinement runs: the attempt's config with `overrides`
    (`LabelConfig.refine_overrides`), confusion-stratified."""
    return dataclasses.replace(config, restarts=(), **{**overrides, "sampler": "confusion"})
