"""Selections to prepared batches: the SAE-side stage just before labeling.

Each group of features (from the run layer, in labeling order) becomes a `LabelBatch`: the
examples of each feature rendered (`render.py`, words across tokenizers by `words.py`) and
prepared once (`FeatureData.prepare`: thresholded and checked labelable), a status result for
a feature that cannot be labeled (dead, non-finite, unlabelable), the warm-start logits of the
decoder directions (`logit_lens.py`) with ``LabelConfig.warm_start``, and what the SAE side
knows of each feature (`extras.feature_extra`), which `LabelBatch.finish` attaches to its
result on the driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..descent.batch import LabelBatch
from ..evaluator.model import Evaluator
from ..formats.labelset import status_result
from ..records.config import LabelConfig
from ..records.data import FeatureData, FeatureDataError, PreparedFeature
from ..records.extra import FeatureExtra
from ..records.result import LabelResult
from .cache import ActivationCache
from .config import ExampleConfig
from .examples import RandomPool, Selection
from .extras import feature_extra
from .logit_lens import warm_start_logits
from .render import contexts_needed, render_feature
from .subject import Subject
from .words import WordDecoder


@dataclass(frozen=True)
class BatchStage:
    """What preparing a batch needs: the selections, the activation cache they index, and
    how examples become words and prompts."""

    sels: dict[int, Selection]
    """The selected examples (`examples.select_examples`) of each requested feature not yet
    labeled for good (`release`)."""
    pool: RandomPool
    """The shared random examples (and the corpus's token count)."""
    act_cache: ActivationCache
    """Where the contexts of the examples are read from."""
    decoder: WordDecoder
    """Subject tokens to words."""
    ex: ExampleConfig
    """Which examples and how many."""
    config: LabelConfig
    """The labeling settings (threshold, warm start, vocabulary mask)."""
    evaluator: Evaluator
    """The evaluator (its placeholder, spelling and vocabulary; it labels elsewhere)."""
    warm: Subject | None = None
    """The subject, for warm-start logits from its decoder directions; None: cold start."""

    def release(self, features: Iterable[int]) -> None:
        """Forget the selections of `features`, labeled for good: a run keeps only those of
        the features still to label (a whole SAE's would all stay until its last feature:
        0.72 GB at 16k features)."""
        for f in features:
            self.sels.pop(int(f), None)


def prepared_batches(groups: Iterable[list[int]], stage: BatchStage) -> Iterator[LabelBatch]:
    """Each group of features as a `LabelBatch`, prepared when it is asked for."""
    for group in groups:
        yield prepare_batch(group, stage)


def prepare_batch(group: list[int], stage: BatchStage) -> LabelBatch:
    """One group of features as a `LabelBatch` (module docstring)."""
    needed = set().union(*(contexts_needed(stage.sels[f], stage.pool) for f in group))
    contexts = stage.act_cache.contexts(sorted(needed))
    done: list[LabelResult] = []
    prepared: list[PreparedFeature] = []
    extras: dict[int, FeatureExtra] = {}
    for f in group:
        feature, result, extra = _prepare(stage.sels[f], contexts, stage)
        if result is not None:
            done.append(result)
        else:
            assert feature is not None and extra is not None
            prepared.append(feature)
            extras[f] = extra
    init = None
    if stage.warm is not None and prepared:
        init = list(_warm_start(stage, stage.warm, [int(p.name) for p in prepared]))
    return LabelBatch(features=list(group), done=done, prepared=prepared, init_logits=init,
                      extras=extras)


def _prepare(sel: Selection, contexts: dict[int, list[int]], stage: BatchStage
             ) -> tuple[PreparedFeature | None, LabelResult | None, FeatureExtra | None]:
    """The feature's checked examples and extra, or the result saying why it cannot be
    labeled."""
    pool, ex, config, evaluator = stage.pool, stage.ex, stage.config, stage.evaluator
    name = evaluator.name or ""
    bad = sel.status(pool.n_tokens)  # dead, or activations that were NaN/inf
    if bad is not None:
        return None, status_result(sel.feature, *bad, feature_extra(sel, pool, None, ex),
                                   evaluator=name), None
    rendered = render_feature(sel, pool, contexts, stage.decoder, ex,
                              stage.act_cache.special_ids, evaluator.placeholder,
                              spellable=evaluator.can_spell)
    try:
        prepared = FeatureData.from_examples(rendered.rated(), name=sel.feature).prepare(config)
    except FeatureDataError as err:
        return None, status_result(sel.feature, "unlabelable", str(err) + rendered.drop_note(),
                                   feature_extra(sel, pool, rendered, ex), evaluator=name), None
    return prepared, None, feature_extra(sel, pool, rendered, ex)


def _warm_start(stage: BatchStage, subject: Subject, features: list[int]) -> torch.Tensor:
    config, evaluator = stage.config, stage.evaluator
    # On the CPU: the logits travel with the batch (to a Ray actor, too).
    return warm_start_logits(subject, evaluator, features, config.warm_start_options,
                             vocab_mask=evaluator.label_vocab(config)).cpu()
