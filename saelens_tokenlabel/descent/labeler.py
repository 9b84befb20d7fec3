"""`label_feature`: FeatureData in, LabelResult out."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..evaluator.model import EncodedExample, Evaluator
from ..records.config import LabelConfig
from ..records.data import FeatureData, PreparedFeature
from ..records.result import LabelResult
from ..records.splits import split_examples
from .engine import StepContext
from .search import optimize_labels
from .state import FeatureJob


def split_holdout(
    targets: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of single examples (each its own group): `fraction` of the active and
    of the inactive examples are held out (at least one of each class when the class has two
    or more), always leaving at least one of each class for training. Returns (train, held)
    indices. `feature_jobs` uses `splits.split_examples`, which also keeps a validation split
    and groups examples by context."""
    n = len(targets)
    words = [str(i) for i in range(n)]
    split = split_examples(list(range(n)), words, (targets > 0.5).tolist(), 0.0, fraction, seed)
    return torch.tensor(split.train, dtype=torch.long), torch.tensor(split.heldout,
                                                                     dtype=torch.long)


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
    return label_prepared([d.prepare(config) for d in datas], evaluator, config, init_logits)


def label_prepared(
    prepared: Sequence[PreparedFeature],
    evaluator: Evaluator,
    config: LabelConfig,
    init_logits: Sequence[torch.Tensor | None] | None = None,
) -> list[LabelResult]:
    """`label_features_data` of features already prepared (`FeatureData.prepare`)."""
    encoded, jobs = feature_jobs(prepared, evaluator, config, init_logits)
    ctx = StepContext.build(evaluator, encoded, config.performance, evaluator.label_vocab(config))
    return optimize_labels(ctx, jobs, config)


def longest_label(config: LabelConfig) -> int:
    """The most label slots any attempt of `config` may use: its own, a restart's, or grown
    (`grow_label`)."""
    slots = [config.label_length, *(int(r.get("label_length", 0)) for r in config.restarts)]
    if config.grow_label:
        slots.append(config.max_label_length)
    return max(slots)


def feature_jobs(
    prepared: Sequence[PreparedFeature],
    evaluator: Evaluator,
    config: LabelConfig,
    init_logits: Sequence[torch.Tensor | None] | None = None,
) -> tuple[list[EncodedExample], list[FeatureJob]]:
    """The encoded examples the features share (each (text, word) once) and one job per
    feature: its examples split into training, validation and held-out ones
    (`splits.split_examples`: by context, stratified by class and rare words)."""
    index: dict[tuple[str, str], int] = {}
    encoded: list[EncodedExample] = []
    jobs = []
    slots = longest_label(config)
    for n, feature in enumerate(prepared):
        ex = feature.examples
        ids = []
        for item in ex.items:
            key = (item.sentence, item.word)
            if key not in index:
                index[key] = len(encoded)
                encoded.append(evaluator.encode(item.sentence, item.word))
                evaluator.check_fits(encoded[-1], slots, feature.name)
            ids.append(index[key])
        ids_t = torch.tensor(ids, dtype=torch.long)
        targets = torch.tensor([float(i.active) for i in ex.items])
        split = split_examples([i.group for i in ex.items], [i.word for i in ex.items],
                               [i.active for i in ex.items], config.validation_fraction,
                               config.holdout_fraction, config.seed)
        train, val, held = (torch.tensor(x, dtype=torch.long)
                            for x in (split.train, split.validation, split.heldout))
        jobs.append(FeatureJob(
            name=feature.name,
            example_ids=ids_t[train],
            targets=targets[train],
            heldout_ids=ids_t[held],
            heldout_targets=targets[held],
            validation_ids=ids_t[val],
            validation_targets=targets[val],
            words=tuple(ex.items[i].word for i in split.train),
            threshold=ex.threshold,
            threshold_rule=ex.threshold_rule,
            init_logits=None if init_logits is None else init_logits[n],
        ))
    return encoded, jobs
