"""The search policy: which attempts run, for which features, and which one is kept.

`optimize_labels` runs attempts: the config itself; for labels of two or more tokens, the
evaluator's own proposals (`prior_labels`: its likeliest first label tokens, continued
greedily) as starting points; then its `restarts`, each only for the features whose label has
not succeeded yet (`records.verdict.passes`); then, with `grow_label`, longer labels. With
`refine`, an attempt whose label has fixable training or validation errors (`refine`) is
followed at once by a
refinement of that label. It keeps each feature's best attempt by validation score
(`records.verdict.selection_score`, then fewer fixable errors) and records them all in
`LabelResult.attempts`. A feature that no label explains is checked for a union of two
concepts (`polysemantic`). The result chosen gets its verdict (`records.verdict`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..evaluator.forward import conditional_log_q
from ..records.config import LabelConfig
from ..records.result import Attempt, LabelResult
from ..records.verdict import fixable_errors, passes, selection_score, with_verdict
from .attempts import run_attempt
from .engine import StepContext
from .hardlabel import Ratings, finish
from .polysemantic import find_union
from .refine import ErrorCheck, check_errors, hint_logits, refine_config, refine_job, short_list
from .state import FeatureJob

log = logging.getLogger(__name__)

Plan = list[tuple[dict[str, Any], LabelConfig, int | None]]
"""Attempts in order: (overrides, config, rank of the prior proposal to start from or None)."""


@torch.no_grad()
def prior_labels(ctx: StepContext, job: FeatureJob, config: LabelConfig, max_rows: int = 32
                 ) -> list[list[int]]:
    """The evaluator's own proposals for a `config.label_length`-token label: its
    `prior_beam` most likely first label tokens (q at the label slot, averaged over the
    feature's examples), each continued greedily by its most likely next label tokens."""
    ev = ctx.evaluator
    rows = job.example_ids[:max_rows]
    allowed = (torch.ones(ev.d_vocab, dtype=torch.bool) if ctx.vocab_mask is None
               else ctx.vocab_mask.cpu())
    q0 = ctx.cache.log_q_rows(rows).exp().mean(0).cpu().masked_fill(~allowed, -1.0)
    firsts = q0.topk(min(config.prior_beam, int(allowed.sum()))).indices.tolist()
    labels = []
    for t in firsts:
        ids = [t]
        while len(ids) < config.label_length:
            prefix = torch.tensor(ids)[None].expand(len(rows), -1)
            lq = conditional_log_q(ev, ctx.encoded, ctx.kv_cache, rows, prefix)[:, -1]
            q = lq.exp().mean(0).cpu().masked_fill(~allowed, -1.0)
            ids.append(int(q.argmax()))
        labels.append(ids)
    return labels


def _rank(result: LabelResult) -> tuple[float, ...]:
    # Validation score first; among equals fewer fixable errors (a too-broad label scores
    # like the right one where its few telling examples missed the split), then a converged
    # label, then the lower training loss.
    return (selection_score(result.metrics),
            -fixable_errors(result.metrics), float(result.converged),
            -(result.metrics.get("train_loss_accuracy") or float("inf")))


def _attempt(result: LabelResult, index: int, overrides: dict[str, Any], keep_traj: bool
             ) -> Attempt:
    return Attempt(
        attempt=index, overrides=dict(overrides), label_length=len(result.label_token_ids),
        label=result.label, label_tokens=list(result.label_tokens),
        label_token_ids=list(result.label_token_ids), probability=result.probability,
        converged=result.converged, converged_step=result.converged_step, steps=result.steps,
        metrics=dict(result.metrics), trajectory=result.trajectory if keep_traj else None)


def _plan(config: LabelConfig) -> Plan:
    """Attempt 0; for labels of two or more tokens, one per prior proposal; the restarts."""
    attempt_configs = config.attempt_configs()
    plan: Plan = [(*attempt_configs[0], None)]
    if config.label_length >= 2:
        plan += [({"prior_rank": r}, attempt_configs[0][1], r) for r in range(config.prior_beam)]
    return plan + [(o, c, None) for o, c in attempt_configs[1:]]


class _Search:
    """Per-feature bookkeeping of one `optimize_labels` call: every attempt, and the best."""

    def __init__(self, ctx: StepContext, jobs: Sequence[FeatureJob], config: LabelConfig):
        self.ctx, self.jobs, self.config = ctx, jobs, config
        n = len(jobs)
        self.best: list[LabelResult | None] = [None] * n
        self.best_v: list[torch.Tensor | None] = [None] * n
        self.best_cfg: list[tuple[dict[str, Any], LabelConfig]] = [({}, config)] * n
        self.best_at: list[int] = [-1] * n
        """Index into `attempts[i]` of the kept attempt."""
        self.attempts: list[list[Attempt]] = [[] for _ in jobs]
        self.beams: dict[int, list[list[int]]] = {}
        self.candidates: list[list[list[int]]] = [[] for _ in jobs]
        """Labels each feature's attempts ended on or weighed (for `polysemantic`)."""
        self.checks: dict[int, tuple[torch.Tensor, ErrorCheck]] = {}
        """Feature -> its latest attempt's training ratings and its error check."""

    def run(self, members: list[int], cfg: LabelConfig, overrides: dict[str, Any],
            jobs: list[FeatureJob]) -> list[tuple[int, LabelResult, torch.Tensor]]:
        """One attempt for `members` (their `jobs`), recorded; (feature, result, final v)."""
        out = []
        for i, s in zip(members, run_attempt(self.ctx, jobs, cfg), strict=True):
            # Scored on the feature's own splits, whatever examples the attempt trained on
            # (a refinement adds fixable validation errors to its training examples).
            r, ratings = finish(dataclasses.replace(s, job=self.jobs[i]), self.ctx, cfg)
            r = self._check(i, r, ratings)
            # Numbered per feature (0, 1, 2, ...): a refinement that ran for other features
            # of the batch is no attempt of this one, so a batched feature's attempts are
            # numbered as they would be alone.
            self.attempts[i].append(_attempt(r, len(self.attempts[i]), overrides,
                                             self.config.keep_attempt_trajectories))
            assert s.final_v is not None
            out.append((i, r, s.final_v))
        return out

    def _check(self, i: int, r: LabelResult, ratings: Ratings) -> LabelResult:
        """Feature i's short-list, and (with `refine`) its converged label's fixable errors
        as the ``train_fixable_errors`` and ``validation_fixable_errors`` metrics."""
        config = self.config
        alternatives = short_list(r.trajectory, r.label_token_ids, config.refine_candidates)
        self.candidates[i] += [r.label_token_ids, *alternatives]
        if not (config.refine and r.converged and not ratings.all_right()):
            self.checks.pop(i, None)
            return r
        check = check_errors(self.ctx, self.jobs[i], r.label_token_ids, ratings.train,
                             r.trajectory, config, ratings.validation)
        self.checks[i] = (ratings.train, check)
        return dataclasses.replace(r, metrics={
            **r.metrics, "train_fixable_errors": float(check.n_fixable),
            "validation_fixable_errors": float(check.n_validation_fixable)})

    def keep(self, i: int, r: LabelResult, v: torch.Tensor, overrides: dict[str, Any],
             cfg: LabelConfig) -> None:
        """Feature i's latest attempt is its best so far."""
        self.best[i], self.best_v[i], self.best_cfg[i] = r, v, (overrides, cfg)
        self.best_at[i] = len(self.attempts[i]) - 1

    def consider(self, ran: list[tuple[int, LabelResult, torch.Tensor]],
                 overrides: dict[str, Any], cfg: LabelConfig) -> list[int]:
        """Keep each result that beats its feature's best; returns the features it did."""
        kept = []
        for i, r, v in ran:
            prev = self.best[i]
            if prev is None or _rank(r) > _rank(prev):
                self.keep(i, r, v, overrides, cfg)
                kept.append(i)
        return kept

    def refine(self, features: list[int], overrides: dict[str, Any], cfg: LabelConfig
               ) -> None:
        """A refinement (`refine`) for each of `features` whose best label, just found, has
        fixable training or validation errors; kept where it ranks higher."""
        todo = [i for i in features if i in self.checks and self.checks[i][1].any_fixable]
        if not todo:
            return
        jobs = [refine_job(self.ctx, self.jobs[i], self._best(i).label_token_ids,
                           *self.checks[i]) for i in todo]
        r_cfg = refine_config(cfg, self.config.refine_overrides)
        refined = {**overrides, **self.config.refine_overrides, "sampler": "confusion",
                   "refined": True}
        self.consider(self.run(todo, r_cfg, refined, jobs), refined, r_cfg)

    def plan_jobs(self, todo: list[int], n: int, rank: int | None
                  ) -> tuple[list[int], list[FeatureJob]]:
        """The features attempt `n` runs for, and their jobs (with their starting v)."""
        jobs, ctx = self.jobs, self.ctx
        if rank is None:
            # A warm start (init_logits) is attempt 0's; restarts start cold, so a misleading
            # warm start (a decoder promoting the wrong token) cannot decide every attempt.
            return todo, [jobs[i] if n == 0 else dataclasses.replace(jobs[i], init_logits=None)
                          for i in todo]
        for i in todo:
            if i not in self.beams:
                self.beams[i] = prior_labels(ctx, jobs[i], self.config)
        members = [i for i in todo if rank < len(self.beams[i])]
        return members, [dataclasses.replace(jobs[i], init_logits=hint_logits(
            self.beams[i][rank], ctx.evaluator.d_vocab, ctx.vocab_mask)) for i in members]

    def search(self) -> None:
        """The planned attempts, each for the features that have not succeeded yet."""
        todo = list(range(len(self.jobs)))
        for n, (overrides, cfg, rank) in enumerate(_plan(self.config)):
            if not todo:
                break
            members, todo_jobs = self.plan_jobs(todo, n, rank)
            if not members:
                continue
            kept = self.consider(self.run(members, cfg, overrides, todo_jobs), overrides, cfg)
            self.refine(kept, overrides, cfg)
            todo = [i for i in todo
                    if not passes(self._best(i), self.config.success_score)]

    def grow(self) -> None:
        """`grow_label`: each feature's best label gains a slot while the score improves."""
        config = self.config
        growing = list(range(len(self.jobs)))
        length = config.label_length
        while growing and length < config.max_label_length:
            length += 1
            # Features whose best attempt used the same overrides grow together.
            groups: dict[str, list[int]] = {}
            for i in growing:
                groups.setdefault(repr(sorted(self.best_cfg[i][0].items())), []).append(i)
            growing = [i for members in groups.values()
                       for i in self._grow_group(members, length)]

    def _grow_group(self, members: list[int], length: int) -> list[int]:
        """One slot more for `members` (same best overrides); returns those that kept it."""
        overrides, cfg = self.best_cfg[members[0]]
        grown = dataclasses.replace(cfg, label_length=length,
                                    max_label_length=max(length, cfg.max_label_length))
        grown_jobs = [dataclasses.replace(self.jobs[i], init_logits=self.best_v[i])
                      for i in members]
        grown_overrides = {**overrides, "label_length": length}
        still = []
        for i, r, v in self.run(members, grown, grown_overrides, grown_jobs):
            gain = selection_score(r.metrics) - selection_score(self._best(i).metrics)
            # A longer label must earn its slot by a validation gain.
            if gain >= self.config.grow_min_gain:
                self.keep(i, r, v, grown_overrides, grown)
                still.append(i)
            else:
                self.attempts[i][-1] = dataclasses.replace(
                    self.attempts[i][-1], rejected=f"validation gain {gain:+.3f} < "
                    f"grow_min_gain {self.config.grow_min_gain}")
        return still

    def _best(self, i: int) -> LabelResult:
        r = self.best[i]
        assert r is not None
        return r

    def result(self, i: int) -> LabelResult:
        """Feature i's best attempt's result, with every attempt recorded."""
        chosen = self.best_at[i]
        attempts = [dataclasses.replace(a, selected=n == chosen)
                    for n, a in enumerate(self.attempts[i])]
        r = self._best(i)
        if not r.converged:
            log.info("feature %s: not converged after %d attempts (best %r at p=%.3f)",
                     r.feature, len(attempts), r.label, r.probability)
        poly = None
        if self.config.polysemantic_check and not passes(r, self.config.success_score):
            poly = find_union(self.ctx, self.jobs[i], self.candidates[i], self.config)
        r = dataclasses.replace(
            r, attempts=attempts, polysemantic=poly,
            metrics={**r.metrics, "steps_total": float(sum(a.steps for a in attempts)),
                     "attempts": float(len(attempts))},
            config={**(d := self.config.to_dict()),
                    **{k: v for k, v in attempts[chosen].overrides.items() if k in d}})
        # Judged once, now that everything it reads is final.
        return with_verdict(r, self.config.verdict_settings())


def optimize_labels(ctx: StepContext, jobs: Sequence[FeatureJob], config: LabelConfig
                    ) -> list[LabelResult]:
    """Label every job's feature; returns results in job order.

    Attempt 0 is `config`; while some features have not succeeded, the next attempt runs for
    those features only (batched together): for labels of two or more tokens first the
    evaluator's proposals (`prior_labels`, `config.prior_beam`), then `config.restarts`. With
    `grow_label`, each feature's best label then gains a slot while the held-out score
    improves. The result is each feature's best attempt, with every attempt in
    `LabelResult.attempts`.
    """
    search = _Search(ctx, jobs, config)
    search.search()
    if config.grow_label:
        search.grow()
    return [search.result(i) for i in range(len(jobs))]
