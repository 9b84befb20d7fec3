"""`label_feature`: FeatureData in, LabelResult out."""

from __future__ import annotations

import torch

from .config import LabelConfig
from .data import FeatureData
from .evaluator import Evaluator
from .forward import PrefixCache
from .optimize import FeatureJob, optimize_labels
from .result import LabelResult


def label_feature(
    data: FeatureData, evaluator: Evaluator, config: LabelConfig | None = None
) -> LabelResult:
    """Find the label whose evaluator ratings best predict where `data`'s feature is active."""
    return label_features_data([data], evaluator, config)[0]


def label_features_data(
    datas: list[FeatureData], evaluator: Evaluator, config: LabelConfig | None = None
) -> list[LabelResult]:
    """Label several features in one optimisation: their rows share each forward pass.

    Examples with the same text and word are encoded and cached once across features.
    """
    config = config or LabelConfig()
    if not isinstance(evaluator, Evaluator):
        raise TypeError(
            f"evaluator must be a saelens_tokenlabel.Evaluator, got {type(evaluator).__name__}. "
            "Wrap your HookedTransformer: stl.Evaluator(model)."
        )
    index: dict[tuple[str, str], int] = {}
    encoded = []
    jobs = []
    for data in datas:
        ex = data.examples(config.threshold, config.threshold_fraction, config.strip_word)
        data.check_labelable(ex)
        ids = []
        for item in ex.items:
            key = (item.sentence, item.word)
            if key not in index:
                index[key] = len(encoded)
                encoded.append(evaluator.encode(item.sentence, item.word))
            ids.append(index[key])
        jobs.append(FeatureJob(
            name=data.name,
            example_ids=torch.tensor(ids, dtype=torch.long),
            targets=torch.tensor([float(i.active) for i in ex.items]),
            threshold=ex.threshold,
            threshold_rule=ex.threshold_rule,
        ))
    cache = PrefixCache.build(evaluator, encoded, config.eval_batch_size, keep_kv=config.use_cache)
    mask = evaluator.vocab_mask(config.exclude_special, config.words_only)
    return optimize_labels(evaluator, encoded, jobs, config, cache, mask)
