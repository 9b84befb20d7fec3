"""Labeling real SAE features: the SAELens plugin and its stages.

activation cache (`activations.py`, `cache.py`) -> examples per feature (`examples.py`,
`render.py`) -> words across tokenizers (`words.py`) -> labels (`label.py`) -> `LabelSet`
(`labelset.py`: metadata, sidecar file) -> Neuronpedia JSONL (`neuronpedia.py`).
`plugin.py` puts `label_features` on every SAELens SAE class.
"""

from .activations import build_activation_cache
from .cache import ActivationCache
from .config import CacheConfig, ExampleConfig
from .corpus import Corpus, CorpusError
from .examples import select_examples
from .hooks import HookError, HookSpec
from .label import label_sae_features
from .labelset import LabelSet
from .names import METADATA_KEY, SIDECAR_FILENAME
from .words import WordDecoder, WordSpan

__all__ = [
    "ActivationCache",
    "CacheConfig",
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
    "label_sae_features",
    "select_examples",
]
