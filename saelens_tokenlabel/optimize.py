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
from .loss import LossTerms, accuracy_loss, answer_margin, label_loss
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
    heldout_ids: torch.Tensor | None = None
    """Examples never optimised on, only used to score the final label."""
    heldout_targets: torch.Tensor | None = None
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


def _accumulate_step(
    v: torch.Tensor,
    vocab_mask: torch.Tensor | None,
    W_E: torch.Tensor,
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    rows: torch.Tensor,
    row_feature: torch.Tensor,
    targets: torch.Tensor,
    counts: torch.Tensor,
    live: list[int],
    config: LabelConfig,
    rows_per_pass: int | None,
) -> LossTerms:
    """Forward/backward one batch, in passes of at most `rows_per_pass` rows.

    The per-feature terms are normalised by the whole batch's row counts, so the passes'
    gradients add up to exactly the one-pass gradient (entropy is added in the first pass).
    Returns the batch's summed terms (detached).
    """
    n = len(rows)
    chunk = n if rows_per_pass is None else max(1, rows_per_pass)
    summed: LossTerms | None = None
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        log_p = label_log_probs(v, vocab_mask)
        e = label_embeddings(log_p.exp(), W_E)[row_feature[sl]]
        logits = _logits(evaluator, encoded, cache, rows[sl], e, config.use_cache)
        acc = accuracy_loss(logits, targets[sl].to(logits.dtype), evaluator.yes_id,
                            evaluator.no_id, config.prediction)
        terms = label_loss(log_p, row_feature[sl], acc, cache.log_q_rows(rows[sl]), counts,
                           config.lambda_acc, config.lambda_ent, config.lambda_kl,
                           with_entropy=start == 0)
        terms.total[live].sum().backward()
        d = LossTerms(*(t.detach() for t in (terms.total, terms.accuracy, terms.entropy,
                                               terms.kl, terms.p)))
        if summed is None:
            summed = d
        else:
            summed = LossTerms(summed.total + d.total, summed.accuracy + d.accuracy,
                               summed.entropy + d.entropy, summed.kl + d.kl, summed.p)
    assert summed is not None
    return summed


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
    prefix: str = "train_",
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
    out = detection_scores(torch.cat(margins), targets > 0.5, prefix=prefix)
    out[prefix + "loss_accuracy"] = float(torch.cat(losses).mean())
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
    # v is fp32 for bf16/fp32 evaluators (float64 ones keep float64, for exactness tests).
    v_dtype = torch.promote_types(torch.float32, W_E.dtype)
    v = torch.cat([
        init_logits(1, k, evaluator.d_vocab, config.init_std,
                    torch.Generator().manual_seed(config.seed))
        for _ in jobs
    ]).to(device=device, dtype=v_dtype).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=config.lr)
    states = [
        _State(job, BalancedSampler(job.targets, config.batch_size, config.seed),
               config.total_steps(len(job.example_ids)), Trajectory())
        for job in jobs
    ]
    step = 0
    rows_per_pass = config.max_rows_per_pass
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

        counts = torch.bincount(row_feature_t, minlength=len(states)).to(device)
        tgt = torch.cat(targets).to(device)
        opt.zero_grad(set_to_none=True)
        while True:
            try:
                terms = _accumulate_step(v, vocab_mask, W_E, evaluator, encoded, cache, rows_t,
                                         row_feature_t, tgt, counts, live, config, rows_per_pass)
                break
            except torch.OutOfMemoryError:
                if (rows_per_pass or len(rows_t)) <= 1:
                    raise
                opt.zero_grad(set_to_none=True)
                rows_per_pass = max(1, (rows_per_pass or len(rows_t)) // 2)
                log.warning("out of memory at step %d; halving to %d rows per forward pass "
                            "(same gradients, accumulated) and carrying on", step,
                            rows_per_pass)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

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
                                    ids, config, prefix="train_"))
    held = s.job.heldout_ids
    if held is not None and len(held):
        assert s.job.heldout_targets is not None
        metrics.update(score_hard_label(evaluator, encoded, cache, held, s.job.heldout_targets,
                                        ids, config, prefix="heldout_"))
    converged = s.converged_step is not None
    n_held = 0 if held is None else len(held)
    held_active = 0 if s.job.heldout_targets is None else int((s.job.heldout_targets > 0.5).sum())
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
        n_examples=len(s.job.example_ids) + n_held,
        n_active=int((s.job.targets > 0.5).sum()) + held_active,
        n_heldout=n_held,
        converged_step=s.converged_step,
        evaluator=evaluator.name or "",
        config=config.to_dict(),
    )
