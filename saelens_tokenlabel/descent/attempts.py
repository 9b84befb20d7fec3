"""One attempt: Adam on the label logits v of many features at once, until each converges or
runs out of steps.

Each feature has its own v, examples, sampler and convergence state. They share the forward
pass: a batch holds rows of several features, each row's label slots carrying its own
feature's embedding. Loss terms never mix features, so a feature's updates are those it would
get alone (Adam is elementwise). A step that runs out of device memory is redone in passes of
half as many rows (the same gradient, accumulated), for the rest of the attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from jaxtyping import Float

from ..evaluator.model import Evaluator
from ..records.config import LabelConfig
from ..records.result import Trajectory
from .engine import Batch, StepContext, step
from .hardlabel import hard_label_margins
from .loss import LossTerms
from .sampler import BalancedSampler, ConfusionSampler
from .soft_label import init_logits, label_log_probs
from .state import AttemptState, FeatureJob

log = logging.getLogger(__name__)


def make_sampler(job: FeatureJob, config: LabelConfig) -> BalancedSampler | ConfusionSampler:
    if config.sampler == "confusion":
        sampler = ConfusionSampler(job.targets, config.batch_size, config.seed,
                                   job.error_eligible)
        if job.prediction is not None:
            # A refinement: the buckets of the label it refines, from step 0 to the end.
            sampler.freeze(job.prediction)
        return sampler
    return BalancedSampler(job.targets, config.batch_size, config.seed)


def initial_v(jobs: Sequence[FeatureJob], config: LabelConfig, d_vocab: int,
              device: torch.device, dtype: torch.dtype
              ) -> Float[torch.Tensor, "feat slot d_vocab"]:
    """Each job's starting logits: the seed's init plus its `init_logits`, if any."""
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


def reclassify(ctx: StepContext, states: list[AttemptState], live: list[int],
               v: torch.Tensor) -> None:
    """Confusion sampler: classify each live feature's training examples under its current
    hard label, in one chunked pass over all of them."""
    with torch.no_grad():
        hard = label_log_probs(v, ctx.vocab_mask).argmax(-1).cpu()
    feats = [i for i in live if isinstance(s := states[i].sampler, ConfusionSampler)
             and not s.frozen]
    if not feats:
        return
    rows = torch.cat([states[i].job.example_ids for i in feats])
    ids = torch.cat([hard[i][None].expand(len(states[i].job.example_ids), -1) for i in feats])
    margins, _ = hard_label_margins(ctx, rows, ids)
    pos = 0
    for i in feats:
        n = len(states[i].job.example_ids)
        sampler = states[i].sampler
        assert isinstance(sampler, ConfusionSampler)
        sampler.update(margins[pos : pos + n] > 0)
        pos += n


def step_halving_on_oom(ctx: StepContext, v: torch.Tensor, batch: Batch, config: LabelConfig,
                        rows_per_pass: int | None) -> tuple[LossTerms, int | None]:
    """`engine.step` into a zeroed ``v.grad``; on `torch.OutOfMemoryError` the step is redone
    in passes of half as many rows (the same gradient, accumulated), down to one row.
    Returns the terms and the rows per pass that worked (for the next steps)."""
    while True:
        try:
            return step(ctx, v, batch, config, rows_per_pass), rows_per_pass
        except torch.OutOfMemoryError:
            n = rows_per_pass or len(batch.rows)
            if n <= 1:
                raise
            # Passes that ran before the failure have added to the gradient: start afresh.
            v.grad = None
            rows_per_pass = max(1, n // 2)
            log.warning("out of memory at step %d; halving to %d rows per forward pass "
                        "(same gradients, accumulated) and carrying on", batch.step,
                        rows_per_pass)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _next_batch(states: list[AttemptState], live: list[int], config: LabelConfig, step_n: int,
                v: torch.Tensor) -> Batch:
    """Each live feature's next sampled rows, with its schedules' values at `step_n`."""
    row_feature, rows, targets = [], [], []
    for i in live:
        picks = next(states[i].sampler)
        rows.append(states[i].job.example_ids[picks])
        targets.append(states[i].job.targets[picks])
        row_feature.append(torch.full((len(picks),), i, dtype=torch.long))
    # Schedules run per feature, over its own number of steps: a feature's run does not
    # depend on which features share its batches.
    lam_ent = torch.tensor([config.lambda_ent_at(step_n, s.total_steps) for s in states],
                           dtype=v.dtype, device=v.device)
    temperature = torch.tensor([config.temperature_at(step_n, s.total_steps) for s in states],
                               dtype=v.dtype, device=v.device)
    return Batch(torch.cat(rows), torch.cat(row_feature).to(v.device),
                 torch.cat(targets).to(v.device), live, lam_ent, temperature, step_n)


def _record(state: AttemptState, step_n: int, p: torch.Tensor, terms: dict[str, float],
            k: int, evaluator: Evaluator) -> None:
    top = p.topk(min(k, p.shape[-1]), dim=-1)
    t = state.trajectory
    t.step.append(step_n)
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


def _converge(state: AttemptState, step_n: int, p: torch.Tensor, config: LabelConfig) -> None:
    """Convergence: every slot's top token holds `convergence_mass` for
    `convergence_patience` consecutive steps; the run's first step is `converged_step`."""
    if bool((p.max(-1).values >= config.convergence_mass).all()):
        state.streak += 1
        if state.streak >= config.convergence_patience and state.converged_step is None:
            state.converged_step = step_n - config.convergence_patience + 1
    else:
        state.streak = 0
        state.converged_step = None


def _advance(ctx: StepContext, states: list[AttemptState], live: list[int], terms: LossTerms,
             v: torch.Tensor, config: LabelConfig, step_n: int) -> None:
    """Record the step (its terms at p before the update) and mark finished features done."""
    p_now = terms.p.detach()
    totals, accs, ents, kls = (t.detach().tolist() for t in
                               (terms.total, terms.accuracy, terms.entropy, terms.kl))
    for i in live:
        s = states[i]
        row_terms = {"loss": totals[i], "loss_accuracy": accs[i], "loss_entropy": ents[i],
                     "loss_kl": kls[i]}
        _record(s, step_n, p_now[i], row_terms, config.trajectory_top_k, ctx.evaluator)
        s.last_terms = row_terms
        s.steps += 1
        _converge(s, step_n, p_now[i], config)
        if s.steps >= s.total_steps or (config.stop_early and s.converged_step is not None):
            s.done = True
            s.final_p = p_now[i].clone()
            s.final_v = v[i].detach().clone()


def run_attempt(ctx: StepContext, jobs: Sequence[FeatureJob], config: LabelConfig
                ) -> list[AttemptState]:
    """One optimisation of every job's v under `config` (no restarts)."""
    W_E = ctx.W_E
    # v is fp32 for bf16/fp32 evaluators (float64 ones keep float64, for exactness tests).
    v_dtype = torch.promote_types(torch.float32, W_E.dtype)
    v = initial_v(jobs, config, ctx.evaluator.d_vocab, W_E.device, v_dtype).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=config.lr)
    states = [AttemptState(job, make_sampler(job, config),
                           config.total_steps(len(job.example_ids)), Trajectory())
              for job in jobs]
    step_n = 0
    rows_per_pass = ctx.performance.max_rows_per_pass
    while not all(s.done for s in states):
        live = [i for i, s in enumerate(states) if not s.done]
        if config.sampler == "confusion" and step_n > 0 and step_n % config.confusion_every == 0:
            reclassify(ctx, states, live, v)
        batch = _next_batch(states, live, config, step_n, v)
        opt.zero_grad(set_to_none=True)
        terms, rows_per_pass = step_halving_on_oom(ctx, v, batch, config, rows_per_pass)
        _advance(ctx, states, live, terms, v, config, step_n)
        opt.step()
        step_n += 1
    return states
