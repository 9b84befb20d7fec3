"""The step engine: forward, loss and backward of one batch of label rows.

`StepContext` holds what every step of a labeling run shares (the evaluator, the encoded
examples, their prefix cache, the vocabulary mask, the performance settings) and the function
that computes a forward pass's logits, so that a test can stand in for the GPU (e.g. raise
`torch.OutOfMemoryError`) without patching a module. `step` is the one optimisation step; the
attempts, the benchmark and the tests all run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int

from ..evaluator.forward import PrefixCache, cached_logits, conditional_log_q, full_prompt_logits
from ..evaluator.model import EncodedExample, Evaluator
from ..records.config import LabelConfig, PerformanceConfig
from .loss import LossTerms, LossWeights, accuracy_loss, label_loss
from .ratings import RatingMemo
from .soft_label import label_embeddings, label_log_probs

PassLogits = Callable[
    ["StepContext", Int[torch.Tensor, " rows"], Float[torch.Tensor, "rows slot d_model"],
     Int[torch.Tensor, " k"] | None],
    Float[torch.Tensor, "rows cols"],
]
"""Logits at the answer position of some rows, their label slots filled by the embeddings:
of the vocabulary's `columns` only (e.g. the answer tokens), or of all of it (None)."""


def prompt_logits(
    ctx: StepContext,
    rows: Int[torch.Tensor, " rows"],
    label_embeds: Float[torch.Tensor, "rows slot d_model"],
    columns: Int[torch.Tensor, " k"] | None = None,
) -> Float[torch.Tensor, "rows cols"]:
    """The real pass: the suffix over the prefix cache (`use_cache`), else the whole prompt."""
    if ctx.cache.keep_kv:
        return cached_logits(ctx.evaluator, ctx.cache, rows, label_embeds, columns)
    logits = full_prompt_logits(ctx.evaluator, [ctx.encoded[int(i)] for i in rows],
                                label_embeds)
    return logits if columns is None else logits[:, columns.to(logits.device)]


@dataclass(frozen=True)
class StepContext:
    """What every step and score of one labeling run shares."""

    evaluator: Evaluator
    encoded: Sequence[EncodedExample]
    """The examples every feature's rows index into (shared across features)."""
    cache: PrefixCache
    """The prefix pass of `encoded`: q at the label slot, and keys/values with `use_cache`."""
    vocab_mask: Bool[torch.Tensor, " d_vocab"] | None = None
    """Tokens a label may use (None: all); moved to the evaluator's device."""
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    pass_logits: PassLogits = prompt_logits
    """Computes a pass's logits; `prompt_logits` unless a test stands in for the device."""
    ratings: RatingMemo = field(init=False, repr=False, compare=False)
    """Hard-label ratings computed so far (`ratings.RatingMemo`): each (label, example)
    rating once per context. A context made with `dataclasses.replace` starts its own."""

    def __post_init__(self) -> None:
        if self.vocab_mask is not None:
            object.__setattr__(self, "vocab_mask", self.vocab_mask.to(self.W_E.device))
        object.__setattr__(self, "ratings", RatingMemo())

    @classmethod
    def build(cls, evaluator: Evaluator, encoded: Sequence[EncodedExample],
              performance: PerformanceConfig | None = None,
              vocab_mask: torch.Tensor | None = None,
              pass_logits: PassLogits = prompt_logits) -> StepContext:
        """Run the prefix pass of `encoded` (the cache) and bundle it with the rest."""
        perf = performance or PerformanceConfig()
        cache = PrefixCache(evaluator, encoded, perf.eval_batch_size,
                                  keep_kv=perf.use_cache, max_resident=perf.max_resident_examples,
                                  fast=perf.fast_suffix)
        return cls(evaluator, encoded, cache, vocab_mask, perf, pass_logits)

    @property
    def W_E(self) -> Float[torch.Tensor, "d_vocab d_model"]:
        return self.evaluator.model.W_E

    def logits(self, rows: Int[torch.Tensor, " rows"],
               label_embeds: Float[torch.Tensor, "rows slot d_model"],
               columns: Int[torch.Tensor, " k"] | None = None
               ) -> Float[torch.Tensor, "rows cols"]:
        return self.pass_logits(self, rows, label_embeds, columns)

    def answer_logits(self, rows: Int[torch.Tensor, " rows"],
                      label_embeds: Float[torch.Tensor, "rows slot d_model"], prediction: str
                      ) -> tuple[Float[torch.Tensor, "rows cols"], int, int]:
        """The logits `prediction` reads, and the columns of "1" and "0" in them: the two
        answer tokens' only for the two-way prediction (the rest of a 128k unembedding is
        never read), all of them for ``full_vocab``."""
        ev = self.evaluator
        if prediction == "two_way":
            cols = torch.tensor([ev.yes_id, ev.no_id], device=self.W_E.device)
            return self.logits(rows, label_embeds, cols), 0, 1
        return self.logits(rows, label_embeds), ev.yes_id, ev.no_id

    @property
    def kv_cache(self) -> PrefixCache | None:
        """The cache for conditional passes: None when the whole prompt is to be re-run."""
        return self.cache if self.cache.keep_kv else None


@dataclass
class Batch:
    """One step's rows, of one or more features (rows of v)."""

    rows: Int[torch.Tensor, " batch"]
    """Indices into `StepContext.encoded` (and its cache)."""
    row_feature: Int[torch.Tensor, " batch"]
    """The feature (row of v) each row belongs to, on v's device."""
    targets: Float[torch.Tensor, " batch"]
    """1.0 where the row's feature is active, else 0.0, on v's device."""
    live: list[int]
    """The features whose loss is backpropagated (those not yet done)."""
    lambda_ent: Float[torch.Tensor, " feat"] | float | None = None
    """Per-feature entropy weight this step (a schedule); None: the config's `lambda_ent`."""
    temperature: Float[torch.Tensor, " feat"] | None = None
    """Per-feature temperature T (p = softmax(v / T)); None: 1."""
    step: int = 0
    """The step's index in its attempt (for messages)."""


def row_log_q(ctx: StepContext, rows: Int[torch.Tensor, " batch"],
              hard: Int[torch.Tensor, "batch slot"], config: LabelConfig
              ) -> Float[torch.Tensor, "batch q_slot d_vocab"]:
    """q for every slot: slot 0's from the prefix pass; slot j's given the hard argmax tokens
    of slots < j (a no-grad pass over just those tokens). Conditioning on the argmax, not on
    the soft label, keeps q a distribution over real continuations of real text."""
    q0 = ctx.cache.log_q_rows(rows)[:, None]
    if hard.shape[1] < 2 or config.lambda_kl == 0:
        return q0
    cond = conditional_log_q(ctx.evaluator, ctx.encoded, ctx.kv_cache, rows, hard[:, :-1])
    return torch.cat([q0, cond.to(q0.device, q0.dtype)], dim=1)


def _pass_terms(ctx: StepContext, v: Float[torch.Tensor, "feat slot d_vocab"],
                hard: Int[torch.Tensor, "feat slot"], batch: Batch, sl: slice,
                counts: Int[torch.Tensor, " feat"], config: LabelConfig) -> LossTerms:
    """The loss terms of the rows `sl` of `batch` (one forward pass)."""
    t = batch.temperature
    log_p = label_log_probs(v if t is None else v / t[:, None, None], ctx.vocab_mask)
    p = log_p.exp()
    if config.straight_through:
        # Forward the hard label, backward through the soft one (as PEZ does): the loss
        # is the reported label's loss, the gradient says which tokens would lower it.
        one_hot = torch.nn.functional.one_hot(hard, p.shape[-1]).to(p.dtype)
        p = one_hot + p - p.detach()
    row_feature = batch.row_feature[sl]
    logits, yes, no = ctx.answer_logits(batch.rows[sl], label_embeddings(p, ctx.W_E)[row_feature],
                                        config.prediction)
    acc = accuracy_loss(logits, batch.targets[sl].to(logits.dtype), yes, no, config.prediction)
    q = row_log_q(ctx, batch.rows[sl], hard[row_feature.to(hard.device)], config)
    lam_ent = config.lambda_ent if batch.lambda_ent is None else batch.lambda_ent
    weights = LossWeights(config.lambda_acc, lam_ent, config.lambda_kl)
    return label_loss(log_p, row_feature, acc, q, counts, weights, with_entropy=sl.start == 0)


def _detached_sum(summed: LossTerms | None, terms: LossTerms) -> LossTerms:
    d = LossTerms(*(t.detach() for t in (terms.total, terms.accuracy, terms.entropy, terms.kl,
                                         terms.p)))
    if summed is None:
        return d
    return LossTerms(summed.total + d.total, summed.accuracy + d.accuracy,
                     summed.entropy + d.entropy, summed.kl + d.kl, summed.p)


def step(ctx: StepContext, v: Float[torch.Tensor, "feat slot d_vocab"], batch: Batch,
         config: LabelConfig, rows_per_pass: int | None = None) -> LossTerms:
    """Forward and backward of one batch, in passes of at most `rows_per_pass` rows (None:
    one pass); the gradient accumulates into ``v.grad`` (zero it first).

    The per-feature terms are normalised by the whole batch's row counts, so the passes'
    gradients add up to exactly the one-pass gradient (entropy is added in the first pass).
    Returns the batch's summed terms (detached).
    """
    n = len(batch.rows)
    chunk = n if rows_per_pass is None else max(1, rows_per_pass)
    counts = torch.bincount(batch.row_feature, minlength=v.shape[0]).to(v.device)
    if config.straight_through or (v.shape[1] >= 2 and config.lambda_kl != 0):
        with torch.no_grad():
            hard = label_log_probs(v, ctx.vocab_mask).argmax(-1)
    else:
        # Unread (one slot, or no KL): skip a softmax over the vocabulary.
        hard = torch.zeros(v.shape[:2], dtype=torch.long, device=v.device)
    summed: LossTerms | None = None
    for start in range(0, n, chunk):
        terms = _pass_terms(ctx, v, hard, batch, slice(start, start + chunk), counts, config)
        terms.total[batch.live].sum().backward()
        summed = _detached_sum(summed, terms)
    assert summed is not None
    return summed
