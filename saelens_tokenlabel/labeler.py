"""`label_feature`: FeatureData in, LabelResult out."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import LabelConfig
from .data import FeatureData
from .evaluator import EncodedExample, Evaluator
from .optimize import FeatureJob, StepContext, optimize_labels
from .result import LabelResult


def split_holdout(
    targets: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split: `fraction` of the active and of the inactive examples are held out
    (at least one of each class when the class has two or more, so held-out scores are
    defined), always leaving at least one of each class for training.
    Returns (train, held) indices."""
    gen = torch.Generator().manual_seed(seed)
    held = []
    for cls in (True, False):
        idx = torch.nonzero((targets > 0.5) == cls).flatten()
        n_held = round(fraction * len(idx))
        if fraction > 0:
            n_held = max(n_held, 1)
        n_held = min(n_held, len(idx) - 1)
        held.append(idx[torch.randperm(len(idx), generator=gen)][: max(0, n_held)])
    held_idx = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(targets), dtype=torch.bool)
    keep[held_idx] = False
    return torch.nonzero(keep).flatten(), held_idx


def label_feature(
    data: FeatureData, evaluator: Evaluator, config: LabelConfig | None = None
) -> LabelResult:
    """Find the label whose evaluator ratings best predict where `data`'s feature is active."""
    return label_features_data([data], evaluator, config)[0]


def label_features_data(
    datas: list[FeatureData],
    evaluator: Evaluator,
    config: LabelConfig | None = None,
    init_logits: Sequence[torch.Tensor | None] | None = None,
) -> list[LabelResult]:
    """Label several features in one optimisation: their rows share each forward pass.

    Examples with the same text and word are encoded and cached once across features.
    `init_logits` (one per feature, ``[d_vocab]`` or ``[slots, d_vocab]`` over the evaluator's
    vocabulary, or None) warm-starts v, e.g. from `sae.logit_lens.warm_start_logits`.
    """
    config = config or LabelConfig()
    if not isinstance(evaluator, Evaluator):
        raise TypeError(
            f"evaluator must be a saelens_tokenlabel.Evaluator, got {type(evaluator).__name__}. "
            "Wrap your HookedTransformer: stl.Evaluator(model)."
        )
    if init_logits is not None and len(init_logits) != len(datas):
        raise ValueError(f"init_logits has {len(init_logits)} entries for {len(datas)} "
                         "features; pass one (or None) per feature.")
    encoded, jobs = feature_jobs(datas, evaluator, config, init_logits)
    ctx = StepContext.build(evaluator, encoded, config.performance,
                            evaluator.vocab_mask(config.exclude_special, config.words_only))
    return optimize_labels(ctx, jobs, config)


def feature_jobs(
    datas: list[FeatureData],
    evaluator: Evaluator,
    config: LabelConfig,
    init_logits: Sequence[torch.Tensor | None] | None = None,
) -> tuple[list[EncodedExample], list[FeatureJob]]:
    """The encoded examples the features share (each (text, word) once) and one job per
    feature: its examples split into training and held-out ones (`split_holdout`)."""
    index: dict[tuple[str, str], int] = {}
    encoded = []
    jobs = []
    for n, data in enumerate(datas):
        ex = data.examples(config.threshold, config.threshold_fraction, config.strip_word)
        data.check_labelable(ex)
        ids = []
        for item in ex.items:
            key = (item.sentence, item.word)
            if key not in index:
                index[key] = len(encoded)
                encoded.append(evaluator.encode(item.sentence, item.word))
            ids.append(index[key])
        ids_t = torch.tensor(ids, dtype=torch.long)
        targets = torch.tensor([float(i.active) for i in ex.items])
        train, held = split_holdout(targets, config.holdout_fraction, config.seed)
        jobs.append(FeatureJob(
            name=data.name,
            example_ids=ids_t[train],
            targets=targets[train],
            heldout_ids=ids_t[held],
            heldout_targets=targets[held],
            threshold=ex.threshold,
            threshold_rule=ex.threshold_rule,
            init_logits=None if init_logits is None else init_logits[n],
        ))
    return encoded, jobs
