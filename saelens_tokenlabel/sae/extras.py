"""What the SAE stages know of a feature beyond its label: activation statistics, examples,
words. It becomes `LabelResult.extra` (a `FeatureExtra`)."""

from __future__ import annotations

from collections import Counter

from ..records.extra import ActivationStats, FeatureExtra, WordRecord
from .config import ExampleConfig
from .examples import RandomPool, Selection
from .render import RenderedFeature


def feature_extra(sel: Selection, pool: RandomPool, rendered: RenderedFeature | None,
                  ex: ExampleConfig) -> FeatureExtra:
    """What the driver knows of a feature and adds to its result: activation statistics, and
    for a rendered feature its example counts, dropped tokens, word mapping and (with
    `keep_examples`) the examples themselves."""
    activation = ActivationStats(
        max=sel.max_activation,
        n_active_tokens=sel.n_active,
        frequency=sel.n_active / pool.n_tokens if pool.n_tokens else 0.0,
    )
    if rendered is None:
        return FeatureExtra(activation=activation)
    words = tuple(WordRecord.from_dict(w) for w in rendered.words.values())
    return FeatureExtra(
        activation=activation,
        example_counts=dict(Counter(rendered.kinds)),
        dropped=dict(rendered.dropped),
        words=words,
        merged_words=sum(w.merged for w in words),
        examples=rendered.example_records() if ex.keep_examples else None,
    )
