"""Selections to prepared batches: the SAE-side stage just before labeling.

Each group of features (from the run layer, in labeling order) becomes a `LabelBatch`: the
examples of each feature rendered into `FeatureData` (`render.py`, words across tokenizers by
`words.py`), a status result for a feature that cannot be labeled (dead, non-finite,
unlabelable), the warm-start logits of the decoder directions (`logit_lens.py`) with
``LabelConfig.warm_start``, and the driver-side `finish` that adds what the SAE side knows of
each feature (`extras.feature_extra`) to its result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..descent.batch import LabelBatch
from ..evaluator.model import Evaluator
from ..formats.labelset import status_result
from ..records.config import LabelConfig
from ..records.data import FeatureData, FeatureDataError
from ..records.extra import FeatureExtra
from ..records.result import Attempt, LabelResult
from .cache import ActivationCache
from .config import ExampleConfig
from .examples import RandomPool, Selection
from .extras import feature_extra
from .logit_lens import warm_start_logits
from .render import contexts_needed, render_feature
from .words import WordDecoder


@dataclass(frozen=True)
class BatchStage:
    """What preparing a batch needs: the selections, the activation cache they index, and
    how examples become words and prompts."""

    sels: dict[int, Selection]
    """Every requested feature's selected examples (`examples.select_examples`)."""
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
    warm: tuple[Any, Any] | None = None
    """The SAE and the subject model, for warm-start logits; None: cold start."""


def prepared_batches(groups: Iterable[list[int]], stage: BatchStage) -> Iterator[LabelBatch]:
    """Each group of features as a `LabelBatch`, prepared when it is asked for."""
    for group in groups:
        yield prepare_batch(group, stage)


def prepare_batch(group: list[int], stage: BatchStage) -> LabelBatch:
    """One group of features as a `LabelBatch` (module docstring)."""
    needed = set().union(*(contexts_needed(stage.sels[f], stage.pool) for f in group))
    contexts = stage.act_cache.contexts(sorted(needed))
    done: list[LabelResult] = []
    datas: list[FeatureData] = []
    extras: list[FeatureExtra] = []
    for f in group:
        data, result, extra = _prepare(stage.sels[f], contexts, stage)
        if result is not None:
            done.append(result)
        else:
            assert data is not None
            datas.append(data)
            extras.append(extra)
    init = None
    if stage.warm is not None and datas:
        init = list(_warm_start(stage, [int(d.name) for d in datas]))
    finish = Finish({int(d.name): e for d, e in zip(datas, extras, strict=True)})
    return LabelBatch(features=list(group), done=done, datas=datas, init_logits=init,
                      finish=finish)


@dataclass(frozen=True)
class Finish:
    """Driver side, after labeling: each result with its feature's extra attached (and its
    `method`, when set)."""

    extras: dict[int, FeatureExtra]
    """Each feature's extra."""
    method: str | None = None
    """`LabelResult.method` of these results (None: as labeled)."""
    before: dict[int, list[Attempt]] = dataclasses.field(default_factory=dict)
    """Attempts to list before a feature's own (its rejected amortised proposals)."""

    def __call__(self, results: list[LabelResult]) -> list[LabelResult]:
        more = {} if self.method is None else {"method": self.method}
        return [dataclasses.replace(r, extra=self.extras[int(r.feature)],
                                    attempts=[*self.before.get(int(r.feature), []),
                                              *r.attempts], **more)
                for r in results]


def _prepare(sel: Selection, contexts: dict[int, list[int]], stage: BatchStage
             ) -> tuple[FeatureData | None, LabelResult | None, FeatureExtra | None]:
    """The feature's data and extra, or the result saying why it cannot be labeled."""
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
        data = FeatureData.from_examples(rendered.rated(), name=sel.feature)
        data.check_labelable(data.examples(config.threshold, config.threshold_fraction,
                                           config.strip_word))
    except FeatureDataError as err:
        return None, status_result(sel.feature, "unlabelable", str(err) + rendered.drop_note(),
                                   feature_extra(sel, pool, rendered, ex), evaluator=name), None
    return data, None, feature_extra(sel, pool, rendered, ex)


def _warm_start(stage: BatchStage, features: list[int]) -> torch.Tensor:
    assert stage.warm is not None
    sae, model = stage.warm
    config, evaluator = stage.config, stage.evaluator
    mask = evaluator.vocab_mask(config.exclude_special, config.words_only)
    # On the CPU: the logits travel with the batch (to a Ray actor, too).
    return warm_start_logits(sae, model, evaluator, features, top_k=config.warm_start_top_k,
                             vocab_mask=mask, top_mass=config.warm_start_top_mass).cpu()
