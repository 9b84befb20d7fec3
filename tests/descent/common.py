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


def siblings_only_in_validation(subset: str = "mammal") -> tuple:
    """`toy.subset_feature(subset)` as SAE-style examples with context groups, the siblings'
    sentences (the only examples that tell the subset from its parent) in one context, and a
    `LabelConfig` seed whose split puts that context in validation: no training example tells
    "mammal" from "animal". Returns (data, seed, the siblings' words)."""
    from saelens_tokenlabel import FeatureData
    from saelens_tokenlabel.records.splits import split_examples
    from saelens_tokenlabel.toy import CONCEPTS, SUBSETS, subset_feature

    items = subset_feature(subset).examples().items
    siblings = {i.word for i in items} & (set(CONCEPTS[SUBSETS[subset]]) - set(CONCEPTS[subset]))
    telling = {i.sentence for i in items if i.word in siblings}
    data = FeatureData.from_examples(
        [(i.sentence, i.word, i.activation, "siblings" if i.sentence in telling else i.group)
         for i in items], name=f"{subset}-validation")
    ex = data.examples()
    base = LabelConfig()
    for seed in range(50):
        split = split_examples([i.group for i in ex.items], [i.word for i in ex.items],
                               [i.active for i in ex.items], base.validation_fraction,
                               base.holdout_fraction, seed)
        where = {name for name, idx in (("train", split.train), ("validation",
                                                                   split.validation),
                                         ("heldout", split.heldout))
                 for k in idx if ex.items[k].word in siblings}
        if where == {"validation"}:
            return data, seed, siblings
    raise AssertionError("no seed puts the siblings in validation")
