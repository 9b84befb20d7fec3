"""Labeling real SAE features: the SAELens plugin and its stages.

activation cache (`activations.py`, `cache.py`) -> examples per feature (`examples.py`,
`render.py`) -> words across tokenizers (`words.py`) -> labels (`label.py`) -> `LabelSet`
(`labelset.py`: metadata, sidecar file) -> Neuronpedia JSONL (`neuronpedia.py`).
SAE-side scores (`scoring.py`): the decoder's output side and warm start (`logit_lens.py`),
reflective coherence (`coherence.py`); `attribution.py` orders features by attribution;
`validate.py` checks the inputs before any expensive work.
`plugin.py` puts `label_features` on every SAELens SAE class.
"""

from ..labelset import LabelSet
from ..names import METADATA_KEY, SIDECAR_FILENAME
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
