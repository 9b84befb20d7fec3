"""Adam on the label logits v, for one or many features at once.

Each feature has its own v, examples, sampler and convergence state. They share the forward
pass: a batch holds rows of several features, each row's label slots carrying its own
feature's embedding. Loss terms never mix features, so a feature's updates are those it would
get alone (Adam is elementwise).

`optimize_labels` runs attempts: the config itself; for labels of two or more tokens, the
evaluator's own proposals (`prior_labels`: its likeliest first label tokens, continued
greedily) as starting points; then its `restarts`, each only for the features whose label has
not succeeded yet (converged, held-out balanced accuracy >= `success_score`); then, with
`grow_label`, longer labels. It keeps each feature's best attempt by held-out score and
records them all in `LabelResult.attempts`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int

from .config import LabelConfig
from .evaluator import EncodedExample, Evaluator
from .forward import PrefixCache, cached_logits, conditional_log_q, full_prompt_logits
from .loss import LossTerms, accuracy_loss, answer_margin, label_loss
from .result import LabelResult, Trajectory
from .result import selection_score as metric_selection_score
from .sampler import BalancedSampler, ConfusionSampler
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
    init_logits: Float[torch.Tensor, "slot d_vocab"] | None = None
    """Initial v (e.g. the decoder-direction warm start); missing slots start at 0."""


@dataclass
class _State:
    job: FeatureJob
    sampler: BalancedSampler | ConfusionSampler
    total_steps: int
    trajectory: Trajectory
    steps: int = 0
    streak: int = 0
    converged_step: int | None = None
    done: bool = False
    final_p: torch.Tensor | None = None
    final_v: torch.Tensor | None = None
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


def _row_log_q(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    rows: Int[torch.Tensor, " batch"],
    hard: Int[torch.Tensor, "batch slot"],
    config: LabelConfig,
) -> Float[torch.Tensor, "batch q_slot d_vocab"]:
    """q for every slot: slot 0's from the prefix pass; slot j's given the hard argmax tokens
    of slots < j (a no-grad pass over just those tokens). Conditioning on the argmax, not on
    the soft label, keeps q a distribution over real continuations of real text."""
    q0 = cache.log_q_rows(rows)[:, None]
    if hard.shape[1] < 2 or config.lambda_kl == 0:
        return q0
    cond = conditional_log_q(evaluator, encoded, cache if config.use_cache else None, rows,
                             hard[:, :-1])
    return torch.cat([q0, cond.to(q0.device, q0.dtype)], dim=1)


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
    lambda_ent: torch.Tensor | float | None = None,
    temperature: torch.Tensor | None = None,
) -> LossTerms:
    """Forward/backward one batch, in passes of at most `rows_per_pass` rows.

    The per-feature terms are normalised by the whole batch's row counts, so the passes'
    gradients add up to exactly the one-pass gradient (entropy is added in the first pass).
    Returns the batch's summed terms (detached).
    """
    n = len(rows)
    chunk = n if rows_per_pass is None else max(1, rows_per_pass)
    lam_ent = config.lambda_ent if lambda_ent is None else lambda_ent
    with torch.no_grad():
        hard = label_log_probs(v, vocab_mask).argmax(-1)
    summed: LossTerms | None = None
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        log_p = label_log_probs(v if temperature is None else v / temperature[:, None, None],
                                vocab_mask)
        p = log_p.exp()
        if config.straight_through:
            # Forward the hard label, backward through the soft one (as PEZ does): the loss
            # is the reported label's loss, the gradient says which tokens would lower it.
            one_hot = torch.nn.functional.one_hot(hard, p.shape[-1]).to(p.dtype)
            p = one_hot + p - p.detach()
        e = label_embeddings(p, W_E)[row_feature[sl]]
        logits = _logits(evaluator, encoded, cache, rows[sl], e, config.use_cache)
        acc = accuracy_loss(logits, targets[sl].to(logits.dtype), evaluator.yes_id,
                            evaluator.no_id, config.prediction)
        row_log_q = _row_log_q(evaluator, encoded, cache, rows[sl],
                               hard[row_feature[sl].to(hard.device)], config)
        terms = label_loss(log_p, row_feature[sl], acc, row_log_q, counts,
                           config.lambda_acc, lam_ent, config.lambda_kl,
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
def hard_label_margins(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    example_ids: Int[torch.Tensor, " n"],
    label_ids: Int[torch.Tensor, "n slot"] | Sequence[int],
    config: LabelConfig,
    targets: Float[torch.Tensor, " n"] | None = None,
) -> tuple[Float[torch.Tensor, " n"], Float[torch.Tensor, " n"] | None]:
    """logit("1") - logit("0") of each example under a hard label (one for all, or one per
    example), and the accuracy loss against `targets` when given."""
    W_E = evaluator.model.W_E
    ids = torch.as_tensor(label_ids, dtype=torch.long, device=W_E.device)
    if ids.ndim == 1:
        ids = ids[None].expand(len(example_ids), -1)
    margins, losses = [], []
    for start in range(0, len(example_ids), config.eval_batch_size):
        sl = slice(start, start + config.eval_batch_size)
        rows = example_ids[sl]
        logits = _logits(evaluator, encoded, cache, rows, W_E[ids[sl]], config.use_cache)
        margins.append(answer_margin(logits, evaluator.yes_id, evaluator.no_id))
        if targets is not None:
            tgt = targets[sl].to(logits.device, logits.dtype)
            losses.append(accuracy_loss(logits, tgt, evaluator.yes_id, evaluator.no_id,
                                        config.prediction))
    return torch.cat(margins), (torch.cat(losses) if targets is not None else None)


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
    margins, losses = hard_label_margins(evaluator, encoded, cache, example_ids, label_ids,
                                         config, targets)
    assert losses is not None
    out = detection_scores(margins, targets > 0.5, prefix=prefix)
    out[prefix + "loss_accuracy"] = float(losses.mean())
    return out


def _make_sampler(job: FeatureJob, config: LabelConfig) -> BalancedSampler | ConfusionSampler:
    if config.sampler == "confusion":
        return ConfusionSampler(job.targets, config.batch_size, config.seed)
    return BalancedSampler(job.targets, config.batch_size, config.seed)


def _reclassify(states: list[_State], live: list[int], v: torch.Tensor,
                vocab_mask: torch.Tensor | None, evaluator: Evaluator,
                encoded: Sequence[EncodedExample], cache: PrefixCache,
                config: LabelConfig) -> None:
    """Confusion sampler: classify each live feature's training examples under its current
    hard label, in one chunked pass over all of them."""
    with torch.no_grad():
        hard = label_log_probs(v, vocab_mask).argmax(-1).cpu()
    feats = [i for i in live if isinstance(states[i].sampler, ConfusionSampler)]
    if not feats:
        return
    rows = torch.cat([states[i].job.example_ids for i in feats])
    ids = torch.cat([hard[i][None].expand(len(states[i].job.example_ids), -1) for i in feats])
    margins, _ = hard_label_margins(evaluator, encoded, cache, rows, ids, config)
    pos = 0
    for i in feats:
        n = len(states[i].job.example_ids)
        sampler = states[i].sampler
        assert isinstance(sampler, ConfusionSampler)
        sampler.update(margins[pos : pos + n] > 0)
        pos += n


def _initial_v(jobs: Sequence[FeatureJob], config: LabelConfig, d_vocab: int,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    k = config.label_length
    out = []
    for job in jobs:
        # Each feature is initialised exactly as it would be alone: same seed, own generator.
        v = init_logits(1, k, d_vocab, config.init_std,
                        torch.Generator().manual_seed(config.seed))
        if job.init_logits is not None:
            init = job.init_logits.detach().to("cpu", v.dtype)
            if init.ndim == 1:
                init = init[None]
            if init.shape[-1] != d_vocab or init.shape[0] > k:
                raise ValueError(
                    f"feature {job.name}: init_logits has shape {tuple(init.shape)}; expected "
                    f"[slots <= {k}, d_vocab={d_vocab}] (the evaluator's vocabulary).")
            v[0, : init.shape[0]] += init
        out.append(v)
    return torch.cat(out).to(device=device, dtype=dtype)


def _run_attempt(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    jobs: Sequence[FeatureJob],
    config: LabelConfig,
    cache: PrefixCache,
    vocab_mask: torch.Tensor | None,
) -> list[_State]:
    """One optimisation of every job's v under `config` (no restarts)."""
    W_E = evaluator.model.W_E
    device = W_E.device
    # v is fp32 for bf16/fp32 evaluators (float64 ones keep float64, for exactness tests).
    v_dtype = torch.promote_types(torch.float32, W_E.dtype)
    v = _initial_v(jobs, config, evaluator.d_vocab, device, v_dtype).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=config.lr)
    states = [
        _State(job, _make_sampler(job, config), config.total_steps(len(job.example_ids)),
               Trajectory())
        for job in jobs
    ]
    step = 0
    rows_per_pass = config.max_rows_per_pass
    while not all(s.done for s in states):
        live = [i for i, s in enumerate(states) if not s.done]
        if config.sampler == "confusion" and step > 0 and step % config.confusion_every == 0:
            _reclassify(states, live, v, vocab_mask, evaluator, encoded, cache, config)
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
        # Schedules run per feature, over its own number of steps: a feature's run does not
        # depend on which features share its batches.
        lam_ent = torch.tensor([config.lambda_ent_at(step, s.total_steps) for s in states],
                               dtype=v.dtype, device=device)
        temperature = torch.tensor([config.temperature_at(step, s.total_steps)
                                    for s in states], dtype=v.dtype, device=device)
        opt.zero_grad(set_to_none=True)
        while True:
            try:
                terms = _accumulate_step(v, vocab_mask, W_E, evaluator, encoded, cache, rows_t,
                                         row_feature_t, tgt, counts, live, config, rows_per_pass,
                                         lam_ent, temperature)
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
                s.final_v = v[i].detach().clone()
        opt.step()
        step += 1
    return states


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


@torch.no_grad()
def prior_labels(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    cache: PrefixCache,
    job: FeatureJob,
    config: LabelConfig,
    vocab_mask: torch.Tensor | None,
    max_rows: int = 32,
) -> list[list[int]]:
    """The evaluator's own proposals for a `config.label_length`-token label: its
    `prior_beam` most likely first label tokens (q at the label slot, averaged over the
    feature's examples), each continued greedily by its most likely next label tokens."""
    rows = job.example_ids[:max_rows]
    allowed = (torch.ones(evaluator.d_vocab, dtype=torch.bool) if vocab_mask is None
               else vocab_mask.cpu())
    q0 = cache.log_q_rows(rows).exp().mean(0).cpu().masked_fill(~allowed, -1.0)
    firsts = q0.topk(min(config.prior_beam, int(allowed.sum()))).indices.tolist()
    labels = []
    for t in firsts:
        ids = [t]
        while len(ids) < config.label_length:
            prefix = torch.tensor(ids)[None].expand(len(rows), -1)
            lq = conditional_log_q(evaluator, encoded, cache if config.use_cache else None,
                                   rows, prefix)[:, -1]
            q = lq.exp().mean(0).cpu().masked_fill(~allowed, -1.0)
            ids.append(int(q.argmax()))
        labels.append(ids)
    return labels


def _one_hot_init(ids: list[int], d_vocab: int, vocab_mask: torch.Tensor | None
                  ) -> torch.Tensor:
    # Each slot's token starts with half the probability mass: a strong hint, not a verdict.
    n_allowed = d_vocab if vocab_mask is None else int(vocab_mask.sum())
    scale = math.log(max(2, n_allowed - 1))
    init = torch.zeros(len(ids), d_vocab)
    init[torch.arange(len(ids)), torch.tensor(ids)] = scale
    return init


def selection_score(result: LabelResult) -> float:
    """Balanced accuracy of the hard label on held-out examples (training ones if none)."""
    return metric_selection_score(result.metrics)


def succeeded(result: LabelResult, config: LabelConfig) -> bool:
    """Converged, and the hard label's selection score reaches `success_score`."""
    return result.converged and selection_score(result) >= config.success_score


def _rank(result: LabelResult) -> tuple[float, ...]:
    # Held-out score first; among equals a converged label, then the lower training loss.
    return (selection_score(result), float(result.converged),
            -float(result.metrics.get("train_loss_accuracy", float("inf"))))


def _summary(result: LabelResult, attempt: int, overrides: dict[str, Any], keep_traj: bool
             ) -> dict[str, Any]:
    d: dict[str, Any] = {
        "attempt": attempt,
        "overrides": dict(overrides),
        "label_length": len(result.label_token_ids),
        "label": result.label,
        "label_tokens": list(result.label_tokens),
        "label_token_ids": list(result.label_token_ids),
        "probability": result.probability,
        "converged": result.converged,
        "converged_step": result.converged_step,
        "steps": result.steps,
        "metrics": dict(result.metrics),
        "selected": False,
    }
    if keep_traj:
        d["trajectory"] = result.trajectory.to_dict()
    return d


def optimize_labels(
    evaluator: Evaluator,
    encoded: Sequence[EncodedExample],
    jobs: Sequence[FeatureJob],
    config: LabelConfig,
    cache: PrefixCache,
    vocab_mask: torch.Tensor | None = None,
) -> list[LabelResult]:
    """Label every job's feature; returns results in job order.

    Attempt 0 is `config`; while some features have not succeeded, the next attempt runs for
    those features only (batched together): for labels of two or more tokens first the
    evaluator's proposals (`prior_labels`, `config.prior_beam`), then `config.restarts`. With
    `grow_label`,
    each feature's best label then gains a slot while the held-out score improves. The
    result is each feature's best attempt, with every attempt in `LabelResult.attempts`.
    """
    if vocab_mask is not None:
        vocab_mask = vocab_mask.to(evaluator.model.W_E.device)
    best: list[LabelResult | None] = [None] * len(jobs)
    best_v: list[torch.Tensor | None] = [None] * len(jobs)
    best_cfg: list[tuple[dict[str, Any], LabelConfig]] = [({}, config)] * len(jobs)
    attempts: list[list[dict[str, Any]]] = [[] for _ in jobs]
    total_steps = [0] * len(jobs)
    n_run = 0

    def run(todo: list[int], cfg: LabelConfig, overrides: dict[str, Any],
            todo_jobs: list[FeatureJob]) -> list[tuple[int, LabelResult, torch.Tensor]]:
        nonlocal n_run
        states = _run_attempt(evaluator, encoded, todo_jobs, cfg, cache, vocab_mask)
        out = []
        for i, s in zip(todo, states, strict=True):
            r = _finish(s, evaluator, encoded, cache, cfg)
            total_steps[i] += r.steps
            attempts[i].append(_summary(r, n_run, overrides, config.keep_attempt_trajectories))
            assert s.final_v is not None
            out.append((i, r, s.final_v))
        n_run += 1
        return out

    def keep(i: int, r: LabelResult, v: torch.Tensor, overrides: dict[str, Any],
             cfg: LabelConfig) -> None:
        best[i], best_v[i], best_cfg[i] = r, v, (overrides, cfg)
        attempts[i][-1]["_best"] = True
        for a in attempts[i][:-1]:
            a.pop("_best", None)

    todo = list(range(len(jobs)))
    attempt_configs = config.attempt_configs()
    plan: list[tuple[dict[str, Any], LabelConfig, int | None]] = [(*attempt_configs[0], None)]
    if config.label_length >= 2:
        plan += [({"prior_rank": r}, attempt_configs[0][1], r) for r in range(config.prior_beam)]
    plan += [(o, c, None) for o, c in attempt_configs[1:]]
    beams: dict[int, list[list[int]]] = {}
    for n, (overrides, cfg, rank) in enumerate(plan):
        if not todo:
            break
        if rank is None:
            # A warm start (init_logits) is attempt 0's; restarts start cold, so a misleading
            # warm start (a decoder promoting the wrong token) cannot decide every attempt.
            todo_jobs = [jobs[i] if n == 0 else dataclasses.replace(jobs[i], init_logits=None)
                         for i in todo]
            members = todo
        else:
            for i in todo:
                if i not in beams:
                    beams[i] = prior_labels(evaluator, encoded, cache, jobs[i], config,
                                            vocab_mask)
            members = [i for i in todo if rank < len(beams[i])]
            todo_jobs = [dataclasses.replace(jobs[i], init_logits=_one_hot_init(
                beams[i][rank], evaluator.d_vocab, vocab_mask)) for i in members]
        if not members:
            continue
        for i, r, v in run(members, cfg, overrides, todo_jobs):
            prev = best[i]
            if prev is None or _rank(r) > _rank(prev):
                keep(i, r, v, overrides, cfg)
        todo = [i for i in todo if not succeeded(best[i], config)]  # type: ignore[arg-type]

    if config.grow_label:
        growing = list(range(len(jobs)))
        length = config.label_length
        while growing and length < config.max_label_length:
            length += 1
            # Features whose best attempt used the same overrides grow together.
            groups: dict[str, list[int]] = {}
            for i in growing:
                groups.setdefault(repr(sorted(best_cfg[i][0].items())), []).append(i)
            still = []
            for members in groups.values():
                overrides, cfg = best_cfg[members[0]]
                grown = dataclasses.replace(cfg, label_length=length,
                                            max_label_length=max(length, cfg.max_label_length))
                grown_jobs = [dataclasses.replace(jobs[i], init_logits=best_v[i])
                              for i in members]
                for i, r, v in run(members, grown, {**overrides, "label_length": length},
                                   grown_jobs):
                    gain = selection_score(r) - selection_score(best[i])  # type: ignore[arg-type]
                    # A longer label must earn its slot by a held-out gain.
                    if gain >= config.grow_min_gain:
                        keep(i, r, v, {**overrides, "label_length": length}, grown)
                        still.append(i)
                    else:
                        attempts[i][-1]["rejected"] = (
                            f"held-out gain {gain:+.3f} < grow_min_gain {config.grow_min_gain}")
            growing = still

    out = []
    for i, r in enumerate(best):
        assert r is not None
        chosen = next(j for j, a in enumerate(attempts[i]) if a.pop("_best", False))
        for a in attempts[i]:
            a.pop("_best", None)
        attempts[i][chosen]["selected"] = True
        r.attempts = attempts[i]
        r.metrics["steps_total"] = float(total_steps[i])
        r.metrics["attempts"] = float(len(attempts[i]))
        r.config = {**config.to_dict(), **attempts[i][chosen]["overrides"]}
        if not r.converged:
            log.info("feature %s: not converged after %d attempts (best %r at p=%.3f)",
                     r.feature, len(attempts[i]), r.label, r.probability)
        out.append(r)
    return out
