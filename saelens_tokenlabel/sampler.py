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
