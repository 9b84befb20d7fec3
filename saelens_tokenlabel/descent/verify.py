"""Verifying proposed labels: the evaluator's side of amortised labeling.

A `VerifyBatch` carries prepared features (their checked examples) and, per feature, the
labels a map proposed (`run.amortise`). `verify_batch` scores each candidate as a hard label
on the feature's own examples, split exactly as a descent splits them (`labeler.feature_jobs`),
by the scorer a descent's result uses (`hardlabel.batch_label_scores`): one prefix pass over
the batch's examples and one rating pass per example and label, no optimisation. The best
candidate by the descent's selection score is the proposal; it is accepted when its balanced
accuracy clears the bar on the training *and* the validation examples (`accepts`: a descent
must clear it on the validation ones, but it also converged; a proposal has nothing else to
vouch for it). The held-out examples only score what was accepted, as for a descent.

Like `label_batch`, it runs wherever the evaluator is: in the run's process, or in a Ray
actor (`run/ray_backend.py`). What comes back (`Checked`) is small: the accepted results, and
the scored candidates of the rejected features, which the driver turns into warm starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..evaluator.model import Evaluator
from ..records.config import LabelConfig
from ..records.data import PreparedFeature
from ..records.result import Attempt, LabelResult, Trajectory
from ..records.verdict import selection_score, with_verdict
from .engine import StepContext
from .hardlabel import batch_label_scores, job_fields
from .labeler import feature_jobs
from .state import FeatureJob

Ranked = tuple[tuple[tuple[int, ...], float], ...]
"""A feature's candidate labels, best first: (evaluator token ids, the map's share)."""
Tried = dict[int, list[Attempt]]
"""Per rejected feature: its scored candidates, as rejected attempts (`rejected_proposals`)."""


@dataclass(frozen=True)
class VerifyBatch:
    """Prepared features and the candidate labels to score on them."""

    prepared: list[PreparedFeature]
    """Each feature's checked examples (its name is the feature)."""
    candidates: dict[int, Ranked]
    """Feature -> the candidates to score, best first by the map."""
    bar: float
    """The balanced accuracy a candidate must reach on the training and validation
    examples."""

    @property
    def features(self) -> list[int]:
        return [int(p.name) for p in self.prepared]


@dataclass(frozen=True)
class Checked:
    """A `VerifyBatch`'s outcome."""

    accepted: list[LabelResult] = field(default_factory=list)
    """Results of the accepted proposals (``method="amortised"``, no extras yet)."""
    tried: Tried = field(default_factory=dict)
    """The rejected features' scored candidates."""


def verify_batch(batch: VerifyBatch, evaluator: Evaluator, config: LabelConfig) -> Checked:
    """The accepted proposals' results (one prefix pass over the batch's examples, the
    candidates rated in one pass), and the rejected features' scored candidates."""
    if not batch.prepared:
        return Checked()
    encoded, jobs = feature_jobs(batch.prepared, evaluator, config)
    ctx = StepContext.build(evaluator, encoded, config.performance,
                            evaluator.label_vocab(config))
    pairs = [(job, rank, ids, share) for job in jobs
             for rank, (ids, share) in enumerate(batch.candidates[int(job.name)])]
    scores = batch_label_scores(ctx, [(job, ids) for job, _, ids, _ in pairs],
                                config.prediction, heldout=False)
    best: dict[int, tuple[Any, ...]] = {}
    scored: dict[int, list[tuple[tuple[int, ...], float, dict[str, float | None]]]] = {}
    for (job, rank, ids, share), (metrics, _) in zip(pairs, scores, strict=True):
        f = int(job.name)
        scored.setdefault(f, []).append((ids, share, metrics))
        # The descent's choice between attempts: validation, then training accuracy; the
        # map's rank breaks ties.
        key = (selection_score(metrics), metrics.get("train_balanced_accuracy") or 0.0, -rank)
        if f not in best or key > best[f][0]:
            best[f] = (key, job, ids, share, metrics)
    chosen = [b for b in best.values() if accepts(b[4], batch.bar)]
    results = proposal_results(ctx, [(job, ids, share) for _, job, ids, share, _ in chosen],
                               config)
    # Decided on the scores the results keep: the held-out split is only added to them.
    out = [r for r in results if accepts(r.metrics, batch.bar)]
    taken = {int(r.feature) for r in out}
    return Checked(out, {f: rejected_proposals(c, evaluator, batch.bar)
                         for f, c in scored.items() if f not in taken})


def rejected_proposals(scored: list[tuple[tuple[int, ...], float, dict[str, float | None]]],
                       evaluator: Any, bar: float) -> list[Attempt]:
    """A rejected feature's scored candidates as `Attempt` records (no steps; numbered -1,
    -2, ... in the map's order), kept in its result before the descent's attempts."""
    return [Attempt(
        attempt=-1 - rank, overrides={"amortised_proposal": rank + 1}, label_length=len(ids),
        label=evaluator.tokenizer.decode(list(ids)).strip(),
        label_tokens=[evaluator.token_str(i) for i in ids], label_token_ids=list(ids),
        probability=share, converged=False, converged_step=None, steps=0,
        metrics={k: v for k, v in metrics.items() if v is not None},
        rejected=f"amortised proposal: balanced accuracy below {bar} on the training or "
                 "validation examples")
        for rank, (ids, share, metrics) in enumerate(scored)]


def accepts(metrics: dict[str, float | None], bar: float) -> bool:
    """Balanced accuracy at least `bar` on the training examples and, if there are any, on
    the validation examples."""
    train = metrics.get("train_balanced_accuracy")
    val = metrics.get("validation_balanced_accuracy")
    # None: undefined (one class only in the split); no training score, no acceptance.
    return train is not None and train >= bar and (val is None or val >= bar)


def proposal_results(ctx: StepContext, chosen: list[tuple[FeatureJob, tuple[int, ...], float]],
                     config: LabelConfig) -> list[LabelResult]:
    """The results of taking each job's label `ids` (the map's `share`): scored like a
    descent's hard label, held-out examples included (`batch_label_scores`)."""
    ev = ctx.evaluator
    scores = batch_label_scores(ctx, [(job, ids) for job, ids, _ in chosen], config.prediction)
    settings = config.verdict_settings()
    return [with_verdict(LabelResult(
        label=ev.tokenizer.decode(list(ids)).strip(),
        label_tokens=[ev.token_str(i) for i in ids], label_token_ids=list(ids),
        probability=share, converged=True, steps=0,
        metrics={**metrics, "amortised_share": share},
        trajectory=Trajectory(), evaluator=ev.name or "", config=config.to_dict(),
        method="amortised", **job_fields(job)), settings)
        for (job, ids, share), (metrics, _) in zip(chosen, scores, strict=True)]
