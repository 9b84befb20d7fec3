"""Batch sampling. The paper's balanced up-weighting: each batch is half active examples,
half inactive, so rare active tokens are seen as often as common inactive ones."""

from __future__ import annotations

import torch


class _Cycle:
    """Endless reshuffled passes over a fixed set of indices."""

    def __init__(self, items: torch.Tensor, generator: torch.Generator) -> None:
        self.items = items
        self.gen = generator
        self.order = items[:0]
        self.pos = 0

    def take(self, n: int) -> torch.Tensor:
        out = []
        while n > 0:
            if self.pos >= len(self.order):
                self.order = self.items[torch.randperm(len(self.items), generator=self.gen)]
                self.pos = 0
            chunk = self.order[self.pos : self.pos + n]
            self.pos += len(chunk)
            n -= len(chunk)
            out.append(chunk)
        return torch.cat(out)


class BalancedSampler:
    """Draws ceil(B/2) active and floor(B/2) inactive example indices per batch."""

    def __init__(self, targets: torch.Tensor, batch_size: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.arange(len(targets))
        active = targets > 0.5
        if active.all() or not active.any():
            raise ValueError("BalancedSampler needs both active and inactive examples.")
        self.n_active = (batch_size + 1) // 2
        self.n_inactive = batch_size // 2
        self.active = _Cycle(idx[active], gen)
        self.inactive = _Cycle(idx[~active], gen)

    def __next__(self) -> torch.Tensor:
        return torch.cat([self.active.take(self.n_active), self.inactive.take(self.n_inactive)])

    def __iter__(self) -> BalancedSampler:
        return self


class ConfusionSampler:
    """Confusion-stratified batches (paper §4.1): every `refresh_every` steps the examples are
    classified under the current hard label, and each batch draws a quarter from each of the
    true positives, false negatives, false positives and true negatives.

    Why: with the balanced sampler, the examples that tell a concept from its superset (a
    non-mammal animal in mammal text) are as rare in the batches as in the data, so the
    superset's label predicts almost every batch perfectly. Drawing the current label's
    mistakes as often as its successes puts those examples in every batch.

    The active half of the batch is split between TP and FN, the inactive half between FP and
    TN; an empty bucket hands its share to the other bucket of the same class, so every batch
    stays half active. Before the first classification it draws exactly like
    `BalancedSampler`.
    """

    def __init__(self, targets: torch.Tensor, batch_size: int, seed: int,
                 eligible: torch.Tensor | None = None) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.gen = gen
        self.eligible = None if eligible is None else eligible.bool().cpu()
        """Examples that may be drawn as errors (None: all). Another example the label gets
        wrong stays in its class's correct bucket: its error is not one a label can fix."""
        self.active_mask = targets > 0.5
        if self.active_mask.all() or not self.active_mask.any():
            raise ValueError("ConfusionSampler needs both active and inactive examples.")
        self.n_active = (batch_size + 1) // 2
        self.n_inactive = batch_size // 2
        idx = torch.arange(len(targets))
        self.buckets: dict[str, _Cycle] = {
            "active": _Cycle(idx[self.active_mask], gen),
            "inactive": _Cycle(idx[~self.active_mask], gen),
        }
        self.counts: dict[str, int] = {}
        """Bucket sizes at the last classification (tp, fn, fp, tn)."""
        self.frozen = False
        """Keep the buckets of the last classification for good (`freeze`)."""

    def freeze(self, predicted: torch.Tensor) -> None:
        """Bucket by `predicted` once and for all: later classifications are skipped.

        A refinement does this with its starting label's ratings. Re-bucketing by the current
        label would empty the error buckets the moment the label is right, the batches would
        lose the examples that tell it from the starting label, and the prior would pull it
        back; fixed buckets keep them in every batch."""
        self.update(predicted)
        self.frozen = True

    def update(self, predicted: torch.Tensor) -> None:
        """Re-bucket the examples by `predicted` (bool per example, the hard label's "1")."""
        predicted = predicted.bool().cpu()
        idx = torch.arange(len(predicted))
        a = self.active_mask
        if self.eligible is not None:
            # An ineligible error is rated as its class: out of the error buckets.
            predicted = torch.where(self.eligible, predicted, a)
        parts = {"tp": a & predicted, "fn": a & ~predicted, "fp": ~a & predicted,
                 "tn": ~a & ~predicted}
        self.counts = {k: int(m.sum()) for k, m in parts.items()}
        self.buckets = {k: _Cycle(idx[m], self.gen) for k, m in parts.items() if m.any()}

    def _half(self, first: str, second: str, n: int) -> list[torch.Tensor]:
        have = [k for k in (first, second) if k in self.buckets]
        if len(have) == 1:
            return [self.buckets[have[0]].take(n)]
        # An odd share goes to the error bucket (second): the mistakes are what it is for.
        return [self.buckets[first].take(n // 2), self.buckets[second].take(n - n // 2)]

    def __next__(self) -> torch.Tensor:
        if "active" in self.buckets:
            return torch.cat([self.buckets["active"].take(self.n_active),
                              self.buckets["inactive"].take(self.n_inactive)])
        return torch.cat(self._half("tp", "fn", self.n_active)
                         + self._half("tn", "fp", self.n_inactive))

    def __iter__(self) -> ConfusionSampler:
        return self
