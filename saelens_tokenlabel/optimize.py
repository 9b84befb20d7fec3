"""Adam on the label logits v, for one or many features at once.

Each feature has its own v, examples, sampler and convergence state. They share the forward
pass: a batch holds rows of several features, each row's label slots carrying its own
feature's embedding. Loss terms never mix features, so a feature's updates are those it would
get alone (Adam is elementwise).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .config import LabelConfig
from .evaluator import EncodedExample, Evaluator
from .forward import PrefixCache, cached_logits, full_prompt_logits
from .loss import accuracy_loss, answer_margin, label_loss
from .result import LabelResult, Trajectory
from .sampler import BalancedSampler
from .scores import detection_scores
from .soft_label import init_logits, label_embeddings, label_log_probs

log = logging.getLogger(__name__)


@dataclass
class FeatureJob:
    """One feature to label: which shared examples it rates, and its binary targets."""

    name: str | int
    example_ids: torch.Tensor
    """Indices into the shared list of encoded examples (and the prefix cache)."""
    targets: torch.Tensor
    """1.0 where the feature is active on that example, else 0.0."""
    threshold: float | None = None
    threshold_rule: str = ""


@dataclass
class _State:
    job: FeatureJob
    sampler: BalancedSampler
    total_steps: int
    trajectory: Trajectory
    steps: int = 0
    streak: int = 0
    converged_step: int | None = None
    done: bool = False
    final_p: torch.Tensor | None = None
    last_terms: dict[str, float] | None = None


def _logits(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    rows: torch.Tensor,
    label_embeds: torch.Tensor,
    use_cache: bool,
) -> torch.Tensor:
    if use_cache:
        return cached_logits(evaluator, cache, rows, label_embeds)
    return full_prompt_logits(evaluator, [encoded[int(i)] for i in rows], label_embeds)


def _record(state: _State, step: int, p: torch.Tensor, terms: dict[str, float], k: int,
            evaluator: Evaluator) -> None:
    top = p.topk(min(k, p.shape[-1]), dim=-1)
    t = state.trajectory
    t.step.append(step)
    t.loss.append(terms["loss"])
    t.accuracy.append(terms["loss_accuracy"])
    t.entropy.append(terms["loss_entropy"])
    t.kl.append(terms["loss_kl"])
    ids = top.indices.tolist()
    t.top_ids.append(ids)
    t.top_probs.append([[round(x, 6) for x in row] for row in top.values.tolist()])
    for row in ids:
        for i in row:
            if i not in t.tokens:
                t.tokens[i] = evaluator.token_str(i)


@torch.no_grad()
def score_hard_label(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    example_ids: torch.Tensor,
    targets: torch.Tensor,
    label_ids: list[int],
    config: LabelConfig,
) -> dict[str, float]:
    """Detection scores and mean accuracy loss of a hard label over the given examples."""
    W_E = evaluator.model.W_E
    e = W_E[torch.tensor(label_ids, device=W_E.device)][None]
    margins, losses = [], []
    for start in range(0, len(example_ids), config.eval_batch_size):
        rows = example_ids[start : start + config.eval_batch_size]
        logits = _logits(evaluator, encoded, cache, rows, e.expand(len(rows), -1, -1),
                         config.use_cache)
        tgt = targets[start : start + config.eval_batch_size].to(logits.device, logits.dtype)
        margins.append(answer_margin(logits, evaluator.yes_id, evaluator.no_id))
        losses.append(accuracy_loss(logits, tgt, evaluator.yes_id, evaluator.no_id,
                                    config.prediction))
    out = detection_scores(torch.cat(margins), targets > 0.5, prefix="train_")
    out["hard_loss_accuracy"] = float(torch.cat(losses).mean())
    return out


def optimize_labels(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    jobs: Sequence[FeatureJob],
    config: LabelConfig,
    cache: PrefixCache,
    vocab_mask: torch.Tensor | None = None,
) -> list[LabelResult]:
    """Label every job's feature; returns results in job order."""
    W_E = evaluator.model.W_E
    device = W_E.device
    k = config.label_length
    if vocab_mask is not None:
        vocab_mask = vocab_mask.to(device)
    # Each feature is initialised exactly as it would be alone: same seed, own generator.
    v = torch.cat([
        init_logits(1, k, evaluator.d_vocab, config.init_std,
                    torch.Generator().manual_seed(config.seed))
        for _ in jobs
    ]).to(device).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=config.lr)
    states = [
        _State(job, BalancedSampler(job.targets, config.batch_size, config.seed),
               config.total_steps(len(job.example_ids)), Trajectory())
        for job in jobs
    ]
    step = 0
    while not all(s.done for s in states):
        live = [i for i, s in enumerate(states) if not s.done]
        row_feature, rows, targets = [], [], []
        for i in live:
            picks = next(states[i].sampler)
            rows.append(states[i].job.example_ids[picks])
            targets.append(states[i].job.targets[picks])
            row_feature.append(torch.full((len(picks),), i, dtype=torch.long))
        rows_t = torch.cat(rows)
        row_feature_t = torch.cat(row_feature).to(device)

        log_p = label_log_probs(v, vocab_mask)
        e = label_embeddings(log_p.exp(), W_E)[row_feature_t]
        logits = _logits(evaluator, encoded, cache, rows_t, e, config.use_cache)
        tgt = torch.cat(targets).to(device=device, dtype=logits.dtype)
        acc = accuracy_loss(logits, tgt, evaluator.yes_id, evaluator.no_id, config.prediction)
        terms = label_loss(log_p, row_feature_t, acc, cache.log_q[rows_t.to(device)],
                           config.lambda_acc, config.lambda_ent, config.lambda_kl)
        opt.zero_grad(set_to_none=True)
        terms.total[live].sum().backward()

        p_now = terms.p.detach()
        totals, accs, ents, kls = (t.detach().tolist() for t in
                                   (terms.total, terms.accuracy, terms.entropy, terms.kl))
        for i in live:
            s = states[i]
            row_terms = {
                "loss": totals[i],
                "loss_accuracy": accs[i],
                "loss_entropy": ents[i],
                "loss_kl": kls[i],
            }
            _record(s, step, p_now[i], row_terms, config.trajectory_top_k, evaluator)
            s.last_terms = row_terms
            s.steps += 1
            if bool((p_now[i].max(-1).values >= config.convergence_mass).all()):
                s.streak += 1
                if s.streak >= config.convergence_patience and s.converged_step is None:
                    s.converged_step = step - config.convergence_patience + 1
            else:
                s.streak = 0
                s.converged_step = None
            finished = s.steps >= s.total_steps or (
                config.stop_early and s.converged_step is not None
            )
            if finished:
                s.done = True
                s.final_p = p_now[i].clone()
        opt.step()
        step += 1
    return [_finish(s, evaluator, encoded, cache, config) for s in states]


def _finish(s: _State, evaluator: Evaluator, encoded: Sequence[EncodedExample],
            cache: PrefixCache, config: LabelConfig) -> LabelResult:
    assert s.final_p is not None and s.last_terms is not None
    top = s.final_p.max(-1)
    ids = [int(i) for i in top.indices.tolist()]
    metrics = dict(s.last_terms)
    metrics.update(score_hard_label(evaluator, encoded, cache, s.job.example_ids, s.job.targets,
                                    ids, config))
    converged = s.converged_step is not None
    label = evaluator.tokenizer.decode(ids).strip()
    if not converged:
        log.info("feature %s: not converged after %d steps (top %r at p=%.3f)",
                 s.job.name, s.steps, label, float(top.values.min()))
    return LabelResult(
        label=label,
        label_tokens=[evaluator.token_str(i) for i in ids],
        label_token_ids=ids,
        probability=float(top.values.min()),
        converged=converged,
        steps=s.steps,
        metrics=metrics,
        trajectory=s.trajectory,
        feature=s.job.name,
        threshold=s.job.threshold,
        threshold_rule=s.job.threshold_rule,
        n_examples=len(s.job.example_ids),
        n_active=int((s.job.targets > 0.5).sum()),
        converged_step=s.converged_step,
        evaluator=evaluator.name or "",
        config=config.to_dict(),
    )
