"""What the SAE stages know of a feature beyond its label: activation statistics, examples,
words. It goes into `LabelResult.extra`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .config import ExampleConfig
from .examples import RandomPool, Selection
from .render import RenderedFeature


def feature_extra(sel: Selection, pool: RandomPool, rendered: RenderedFeature | None,
           ex: ExampleConfig) -> dict[str, Any]:
    """What the driver knows of a feature and adds to its result: activation statistics, and
    for a rendered feature its example counts, dropped tokens, word mapping and (with
    `keep_examples`) the examples themselves."""
    out: dict[str, Any] = {"activation": {
        "max": sel.max_activation,
        "n_active_tokens": sel.n_active,
        "frequency": sel.n_active / pool.n_tokens if pool.n_tokens else 0.0,
    }}
    if rendered is not None:
        out["example_counts"] = dict(Counter(rendered.kinds))
        out["dropped"] = dict(rendered.dropped)
        out["words"] = list(rendered.words.values())
        out["merged_words"] = sum(w["merged"] for w in out["words"])
        if ex.keep_examples:
            out["examples"] = rendered.records()
    return out
