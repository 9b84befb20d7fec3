"""What the optimisation tests share: a few rated sentences, a quick config, exact loss
comparison."""

from __future__ import annotations

import torch

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.records.config import PerformanceConfig

SENTS = [
    [("The", 0.0), (" cat", 1.0), (" chased", 0.0), (" the", 0.0), (" mouse", 0.8), (".", 0.0)],
    [("A", 0.0), (" dog", 0.9), (" barked", 0.0)],
    [("The", 0.0), (" bird", 0.7), (" sang", 0.0), (" a", 0.0), (" song", 0.0)],
]


def same_losses(a, b):
    torch.testing.assert_close(torch.tensor(a.trajectory.loss, dtype=torch.float64),
                               torch.tensor(b.trajectory.loss, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)


def cfg(performance: dict | None = None, **kw):
    """A short run; `performance` holds `PerformanceConfig` fields."""
    base = dict(steps=12, batch_size=4, lr=0.1, stop_early=False, trajectory_top_k=5,
                restarts=(), confusion_every=3)
    base.update(kw)
    return LabelConfig(**base, performance=PerformanceConfig(**(performance or {})))
