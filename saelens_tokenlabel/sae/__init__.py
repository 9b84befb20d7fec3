"""Labeling real SAE features: the SAELens-facing stages.

Layer 4: imports results, configs, the evaluator and the core labeler, never `run/`, `report/`
or `cli/`. Activation cache (`activations.py`, `cache.py`) -> examples per feature
(`examples.py`, `render.py`) -> words across tokenizers (`words.py`) -> prepared batches
(`batches.py`, with what the SAE side knows of each feature: `extras.py`). SAE-side scores
(`scoring.py`): the decoder's output side and warm start (`logit_lens.py`), reflective
coherence (`coherence.py`); `attribution.py` orders features by attribution; `validate.py`
checks the inputs before any expensive work. `run/pipeline.py` composes these stages.
`compare.py` re-runs them to score existing explanations against a run's labels on the run's
own held-out examples.

Names load on first access (see `saelens_tokenlabel.records.lazy`), so the configs can be imported
without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records.lazy import lazy_exports

if TYPE_CHECKING:
    from ..formats.labelset import LabelSet
    from ..records.names import METADATA_KEY, SIDECAR_FILENAME
    from .activations import NonFiniteActivationError, build_activation_cache
    from .attribution import attribution_scores
    from .cache import ActivationCache
    from .coherence import CoherenceConfig, reflective_coherence
    from .config import CacheConfig, ExampleConfig
    from .corpus import Corpus, CorpusError
    from .examples import select_examples
    from .hooks import HookError, HookSpec
    from .logit_lens import output_side, warm_start_logits
    from .scoring import ScoreConfig, add_sae_scores
    from .validate import validate_inputs
    from .words import WordDecoder, WordSpan

_EXPORTS = {
    "ActivationCache": ".cache",
    "CacheConfig": ".config",
    "CoherenceConfig": ".coherence",
    "NonFiniteActivationError": ".activations",
    "ScoreConfig": ".scoring",
    "add_sae_scores": ".scoring",
    "attribution_scores": ".attribution",
    "output_side": ".logit_lens",
    "reflective_coherence": ".coherence",
    "validate_inputs": ".validate",
    "warm_start_logits": ".logit_lens",
    "Corpus": ".corpus",
    "CorpusError": ".corpus",
    "ExampleConfig": ".config",
    "HookError": ".hooks",
    "HookSpec": ".hooks",
    "LabelSet": "..formats.labelset",
    "METADATA_KEY": "..records.names",
    "SIDECAR_FILENAME": "..records.names",
    "WordDecoder": ".words",
    "WordSpan": ".words",
    "build_activation_cache": ".activations",
    "select_examples": ".examples",
}

__all__ = [
    "ActivationCache",
    "CacheConfig",
    "CoherenceConfig",
    "NonFiniteActivationError",
    "ScoreConfig",
    "add_sae_scores",
    "attribution_scores",
    "output_side",
    "reflective_coherence",
    "validate_inputs",
    "warm_start_logits",
    "Corpus",
    "CorpusError",
    "ExampleConfig",
    "HookError",
    "HookSpec",
    "LabelSet",
    "METADATA_KEY",
    "SIDECAR_FILENAME",
    "WordDecoder",
    "WordSpan",
    "build_activation_cache",
    "select_examples",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
