"""Propose, verify, fall back: the SAE-side stage of amortised labeling.

A group of features gets the map's proposals (`amortize.Amortizer.propose`, from each
feature's decoder row, `feature_inputs`). The map's `candidates` best labels are scored as hard
labels on the feature's own examples, split exactly as a descent splits them
(`labeler.feature_jobs`), by the scorer a descent's result uses
(`optimize.hardlabel.batch_label_scores`): one prefix pass and one rating pass per example and
label, no optimisation. The best of them by the descent's selection score is the proposal. It
is accepted when its balanced accuracy clears the bar on the training *and* the validation
examples (a descent must clear it on the validation ones, but it also converged; a proposal
has nothing else to vouch for it). The held-out examples only score what was accepted, as
for a descent.

Accepted proposals become results with ``method="amortised"``; the other features come back
as a `LabelBatch` to descend, warm-started from their proposals
(``method="warm_started"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from ...descent.batch import LabelBatch
from ...descent.engine import StepContext
from ...descent.hardlabel import batch_label_scores, job_fields
from ...descent.labeler import feature_jobs
from ...descent.state import FeatureJob
from ...records.config import LabelConfig
from ...records.data import PreparedFeature
from ...records.result import Attempt, LabelResult, Trajectory
from ...records.verdict import selection_score, with_verdict
from ...sae.batches import BatchStage, prepare_batch
from .config import AmortizeConfig
from .map import Proposal, init_logits

if TYPE_CHECKING:
    from sae_lens import SAE


def feature_inputs(sae: SAE[Any], features: list[int], inputs: tuple[str, ...] = ("decoder",)
                   ) -> Float[torch.Tensor, "n d"]:
    """What the map reads of each feature: its decoder row and/or encoder column, each
    unit-normalised (float64, CPU)."""
    idx = torch.tensor(features, dtype=torch.long)
    parts = []
    with torch.no_grad():
        if "decoder" in inputs:
            w_dec = sae.W_dec.detach().reshape(int(sae.cfg.d_sae), -1)
            parts.append(w_dec[idx].double().cpu())
        if "encoder" in inputs:
            w_enc = sae.W_enc.detach().reshape(-1, int(sae.cfg.d_sae))
            parts.append(w_enc[:, idx].T.double().cpu())
    return torch.cat([torch.nn.functional.normalize(p, dim=-1) for p in parts], dim=-1)


@dataclass(frozen=True)
class Verified:
    """A group's outcome: results to keep now, and a batch to descend."""

    results: list[LabelResult]
    """Accepted proposals (``method="amortised"``) and features needing no label (dead,
    unlabelable), each with its extra attached."""
    descend: LabelBatch
    """The rejected features, warm-started from their proposals (empty if none)."""


def verify_group(group: list[int], stage: BatchStage, proposals: dict[int, Proposal],
                 config: AmortizeConfig, bar: float) -> Verified:
    """Score each feature's proposal on its examples; accept it or send it to descent."""
    batch = prepare_batch(group, stage)
    datas = {int(p.name): p for p in batch.prepared}
    accepted, tried = ((_score(list(datas.values()), stage, proposals, bar, config.candidates))
                       if datas else ([], {}))
    taken = {int(r.feature) for r in accepted}
    rest = [f for f in datas if f not in taken]
    # A promising candidate starts with the share of the probability a logit-lens warm start
    # gets; with none, the descent starts cold.
    label = stage.config
    start = label.warm_start_options.start_logit(int(stage.evaluator.label_vocab(label).sum()))
    descend = LabelBatch(
        features=rest, prepared=[datas[f] for f in rest],
        init_logits=[init_logits(weighted(tried[f], bar, label.label_length),
                                 stage.evaluator.d_vocab, start) for f in rest],
        extras={f: batch.extras[f] for f in rest}, before={f: tried[f] for f in rest},
        method="warm_started", overrides=config.warm_overrides(label.label_length))
    return Verified(batch.done + batch.finish(accepted), descend)


Tried = dict[int, list[Attempt]]
"""Per rejected feature: its scored candidates, as rejected attempts (`rejected_proposals`)."""


def _score(datas: list[PreparedFeature], stage: BatchStage, proposals: dict[int, Proposal],
           bar: float, candidates: int) -> tuple[list[LabelResult], Tried]:
    """The accepted proposals' results (one prefix pass over the group's examples, the
    candidates rated in one pass), and the rejected features' scored candidates."""
    config, evaluator = stage.config, stage.evaluator
    encoded, jobs = feature_jobs(datas, evaluator, config)
    ctx = StepContext.build(evaluator, encoded, config.performance,
                            evaluator.label_vocab(config))
    pairs = [(job, rank, ids, share) for job in jobs
             for rank, (ids, share) in enumerate(proposals[int(job.name)].ranked[:candidates])]
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
    chosen = [b for b in best.values() if accepts(b[4], bar)]
    results = proposal_results(ctx, [(job, ids, share) for _, job, ids, share, _ in chosen],
                               config)
    # Decided on the scores the results keep: the held-out split is only added to them.
    out = [r for r in results if accepts(r.metrics, bar)]
    taken = {int(r.feature) for r in out}
    rejected = {f: rejected_proposals(c, evaluator, bar) for f, c in scored.items()
                if f not in taken}
    return out, rejected


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


def weighted(tried: list[Attempt], bar: float, label_length: int
             ) -> list[tuple[tuple[int, ...], float]]:
    """A rejected feature's candidates of the descent's label length, each weighted for the
    warm start by the map's share and its `promise` (the descent has `label_length` slots: a
    longer or shorter label cannot start it)."""
    return [(tuple(a.label_token_ids), a.probability * promise(a.metrics, bar)) for a in tried
            if len(a.label_token_ids) == label_length]


def promise(metrics: dict[str, float | None], bar: float) -> float:
    """How far a rejected label got from chance (balanced accuracy 0.5) towards the bar, in
    [0, 1], on the split attempts are chosen by: a label no better than chance gives its
    descent nothing to start from, a near miss nearly its whole share."""
    return min(1.0, max(0.0, (selection_score(metrics) - 0.5) / max(bar - 0.5, 1e-9)))


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
