"""The SAE stages (layer 5): labeling real SAE features on a subject model.

May import `records/`, `formats/`, `evaluator/`, `descent/` and `toy/`; never `run/`, `report/`
or `cli/`. A `Subject` (`subject.py`) carries the model, the SAE and its hook. Activation cache
(`activations.py`, `cache.py`, `corpus.py`, `fingerprint.py`, `hooks.py`) -> examples per
feature (`examples.py`, `render.py`) -> words across tokenizers (`words.py`) -> prepared
batches (`batches.py`, with what the SAE side knows of each feature: `extras.py`). Scorers
(`scorers/`: output side, reflective coherence, steering, and a registry for a user's own);
the decoder's logit lens and warm start (`logit_lens.py`); `attribution.py` orders features by
attribution; `gsae.py` is the g-SAE architecture; `validate.py` checks the inputs before any
expensive work; `compare.py` scores existing explanations against a run's labels on the run's
own held-out examples. `run/pipeline.py` composes these stages.

Names load on first access (see `saelens_tokenlabel.records.lazy`), so the configs can be
imported without torch.
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
    from .config import CacheConfig, ExampleConfig
    from .corpus import Corpus, CorpusError
    from .examples import select_examples
    from .hooks import HookError, HookSpec
    from .logit_lens import output_side, warm_start_logits
    from .scorers.apply import ScoreConfig, add_sae_scores
    from .scorers.coherence import CoherenceConfig, reflective_coherence
    from .scorers.registry import Scorer, register_scorer
    from .subject import Subject
    from .validate import validate_inputs
    from .words import WordDecoder, WordSpan

_EXPORTS = {
    "ActivationCache": ".cache",
    "CacheConfig": ".config",
    "CoherenceConfig": ".scorers.coherence",
    "NonFiniteActivationError": ".activations",
    "ScoreConfig": ".scorers.apply",
    "Scorer": ".scorers.registry",
    "Subject": ".subject",
    "add_sae_scores": ".scorers.apply",
    "register_scorer": ".scorers.registry",
    "attribution_scores": ".attribution",
    "output_side": ".logit_lens",
    "reflective_coherence": ".scorers.coherence",
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
    "Scorer",
    "Subject",
    "add_sae_scores",
    "register_scorer",
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
