"""Scoring a hard label (real tokens, no soft mixture), and an attempt's `LabelResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from ..records.config import LabelConfig
from ..records.result import LabelResult
from .engine import StepContext
from .loss import answer_margin
from .scores import detection_scores
from .state import AttemptState, FeatureJob


@torch.no_grad()
def hard_label_margins(
    ctx: StepContext,
    example_ids: Int[torch.Tensor, " n"],
    label_ids: Int[torch.Tensor, "n slot"] | Sequence[int],
    targets: Float[torch.Tensor, " n"] | None = None,
    prediction: str = "two_way",
) -> tuple[Float[torch.Tensor, " n"], Float[torch.Tensor, " n"] | None]:
    """logit("1") - logit("0") of each example under a hard label (one for all, or one per
    example), and the accuracy loss (`prediction`) against `targets` when given.

    Each (label, example) rating is computed once per context (`ctx.ratings`): asked again,
    it is looked up."""
    ids = torch.as_tensor(label_ids, dtype=torch.long)
    if ids.ndim == 1:
        ids = ids[None].expand(len(example_ids), -1)
    mode = "two_way" if targets is None else prediction
    rated = ctx.ratings.rate(mode, example_ids, ids, partial(_rate, ctx, mode))
    margins = rated[:, 0]
    if targets is None:
        return margins, None
    tgt = targets.to(rated.device, rated.dtype)
    if mode == "two_way":
        # `loss.accuracy_loss` of the two-way prediction: the BCE of the margin.
        return margins, F.binary_cross_entropy_with_logits(margins, tgt, reduction="none")
    # ... and of the full-vocabulary one: the cross-entropy of the target's answer token.
    return margins, torch.where(tgt > 0.5, rated[:, 1], rated[:, 2])


def _rate(ctx: StepContext, mode: str, rows: Int[torch.Tensor, " n"],
          labels: Int[torch.Tensor, "n slot"]) -> Float[torch.Tensor, "n k"]:
    """Ratings of `rows` under their `labels`, in passes of `eval_batch_size` rows: the
    margin, and for the full-vocabulary prediction each answer's cross-entropy
    (−log softmax at "1", at "0")."""
    W_E = ctx.W_E
    labels = labels.to(W_E.device)
    out = []
    size = ctx.performance.eval_batch_size
    for start in range(0, len(rows), size):
        sl = slice(start, start + size)
        logits, yes, no = ctx.answer_logits(rows[sl], W_E[labels[sl]], mode)
        margin = answer_margin(logits, yes, no)[:, None]
        if mode != "two_way":
            log_p = torch.log_softmax(logits, dim=-1)
            margin = torch.cat([margin, -log_p[:, [yes, no]]], dim=1)
        out.append(margin)
    return torch.cat(out)


def score_hard_label(
    ctx: StepContext,
    example_ids: Int[torch.Tensor, " n"],
    targets: Float[torch.Tensor, " n"],
    label_ids: list[int],
    prediction: str = "two_way",
    prefix: str = "train_",
) -> tuple[dict[str, float | None], Bool[torch.Tensor, " n"]]:
    """Detection scores and mean accuracy loss of a hard label over the given examples, and
    whether it rates each one right."""
    margins, losses = hard_label_margins(ctx, example_ids, label_ids, targets, prediction)
    assert losses is not None
    out = detection_scores(margins, targets > 0.5, prefix=prefix)
    out[prefix + "loss_accuracy"] = float(losses.mean())
    return out, (margins.cpu() > 0) == (targets.cpu() > 0.5)


class Ratings(NamedTuple):
    """Whether a hard label rates each example of the splits it may be refined on right."""

    train: Bool[torch.Tensor, " n"]
    """Per training example (`FeatureJob.example_ids`)."""
    validation: Bool[torch.Tensor, " m"]
    """Per validation example (`FeatureJob.validation_ids`; empty without them)."""

    def all_right(self) -> bool:
        return bool(self.train.all()) and bool(self.validation.all())


def label_scores(ctx: StepContext, job: FeatureJob, ids: list[int], prediction: str,
                 heldout: bool = True) -> tuple[dict[str, float | None], Ratings]:
    """A hard label's scores on the job's training, validation and (with `heldout`)
    held-out examples, and whether it rates each training and validation example right.

    Beyond the scores, ``train_errors`` counts the training examples it gets wrong and
    ``train_error_words`` the distinct words among them: a split's balanced accuracy hardly
    moves for the few examples that tell a concept from its parent, a count does."""
    return batch_label_scores(ctx, [(job, ids)], prediction, heldout)[0]


@dataclass(frozen=True)
class _Segment:
    """One hard label on one split of one job's examples."""

    pair: int
    prefix: str
    rows: Int[torch.Tensor, " n"]
    targets: Float[torch.Tensor, " n"]
    label: tuple[int, ...]


def _segments(pairs: Sequence[tuple[FeatureJob, Sequence[int]]], heldout: bool
              ) -> list[_Segment]:
    out = []
    for i, (job, ids) in enumerate(pairs):
        splits = [("train_", job.example_ids, job.targets),
                  ("validation_", job.validation_ids, job.validation_targets)]
        if heldout:
            splits.append(("heldout_", job.heldout_ids, job.heldout_targets))
        for prefix, rows, targets in splits:
            if rows is not None and targets is not None and len(rows):
                out.append(_Segment(i, prefix, rows, targets, tuple(int(t) for t in ids)))
    return out


def batch_label_scores(ctx: StepContext, pairs: Sequence[tuple[FeatureJob, Sequence[int]]],
                       prediction: str, heldout: bool = True
                       ) -> list[tuple[dict[str, float | None], Ratings]]:
    """`label_scores` of many (job, hard label) pairs: the rows of every pair and split whose
    labels have one length go through `hard_label_margins` together."""
    segments = _segments(pairs, heldout)
    done: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for length in sorted({len(g.label) for g in segments}):
        group = [(k, g) for k, g in enumerate(segments) if len(g.label) == length]
        labels = torch.tensor([g.label for _, g in group for _ in range(len(g.rows))],
                              dtype=torch.long).reshape(-1, length)
        margins, losses = hard_label_margins(ctx, torch.cat([g.rows for _, g in group]),
                                             labels, torch.cat([g.targets for _, g in group]),
                                             prediction)
        assert losses is not None
        sizes = [len(g.rows) for _, g in group]
        for (k, _), m, loss in zip(group, margins.split(sizes), losses.split(sizes),
                                   strict=True):
            done[k] = (m, loss)
    none = torch.zeros(0, dtype=torch.bool)
    out: list[tuple[dict[str, float | None], Ratings]] = [({}, Ratings(none, none)) for _ in pairs]
    for k, g in enumerate(segments):
        metrics, ratings = out[g.pair]
        margins, loss = done[k]
        metrics.update(detection_scores(margins, g.targets > 0.5, prefix=g.prefix))
        metrics[g.prefix + "loss_accuracy"] = float(loss.mean())
        correct = (margins.cpu() > 0) == (g.targets.cpu() > 0.5)
        if g.prefix == "train_":
            out[g.pair] = (metrics, ratings._replace(train=correct))
            _errors(metrics, correct, pairs[g.pair][0])
        elif g.prefix == "validation_":
            out[g.pair] = (metrics, ratings._replace(validation=correct))
    return out


def _errors(metrics: dict[str, float | None], correct: torch.Tensor, job: FeatureJob) -> None:
    wrong = torch.nonzero(~correct).flatten().tolist()
    metrics["train_errors"] = float(len(wrong))
    if job.words:
        metrics["train_error_words"] = float(len({job.words[i].lower() for i in wrong}))


def job_fields(job: FeatureJob) -> dict[str, Any]:
    """What a `LabelResult` says of the job's examples: feature, threshold, counts."""
    n_held, n_val = (0 if x is None else len(x) for x in (job.heldout_ids, job.validation_ids))
    held_active = sum(0 if t is None else int((t > 0.5).sum())
                      for t in (job.heldout_targets, job.validation_targets))
    return {"feature": job.name, "threshold": job.threshold,
            "threshold_rule": job.threshold_rule,
            "n_examples": len(job.example_ids) + n_held + n_val,
            "n_active": int((job.targets > 0.5).sum()) + held_active,
            "n_heldout": n_held, "n_validation": n_val}


def finish(state: AttemptState, ctx: StepContext, config: LabelConfig
           ) -> tuple[LabelResult, Ratings]:
    """The `LabelResult` of a finished attempt: its hard label, scored on the training,
    validation and held-out examples of the state's job (`label_scores`); and whether it
    rates each training and validation example right."""
    assert state.final_p is not None and state.last_terms is not None
    job, ev = state.job, ctx.evaluator
    top = state.final_p.max(-1)
    ids = [int(i) for i in top.indices.tolist()]
    scores, correct = label_scores(ctx, job, ids, config.prediction)
    return LabelResult(
        label=ev.tokenizer.decode(ids).strip(),
        label_tokens=[ev.token_str(i) for i in ids],
        label_token_ids=ids,
        probability=float(top.values.min()),
        converged=state.converged_step is not None,
        steps=state.steps,
        metrics={**state.last_terms, **scores},
        trajectory=state.trajectory,
        converged_step=state.converged_step,
        evaluator=ev.name or "",
        config=config.to_dict(),
        **job_fields(job),
    ), correct
