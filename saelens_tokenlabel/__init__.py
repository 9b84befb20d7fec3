"""saelens-tokenlabel: label SAE features by token-space gradient descent.

Schulz & Fallows, "Automated Feature Labeling with Token-Space Gradient Descent"
(arXiv 2504.00754). Importing this package does no I/O, loads no model and imports neither
torch nor SAELens: the public names below load on first access (PEP 562, see `lazy.py`).
The SAELens plugin (every SAE class gets `label_features`, see `run/plugin.py`) is installed
now when SAELens is already imported, else as soon as it is (`run/plugin_hook.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports
from .names import __version__
from .run.plugin_hook import install_now_or_on_import

if TYPE_CHECKING:
    from .amortize import Amortizer
    from .comparison import CompareConfig, Comparison
    from .config import AmortizeConfig, LabelConfig, PerformanceConfig
    from .data import Example, FeatureData, FeatureDataError
    from .evaluator import EncodedExample, Evaluator, EvaluatorError
    from .explanations import read_explanations
    from .labeler import label_feature, label_features_data
    from .labelset import LabelSet
    from .loading import load_evaluator_model, load_local_model, save_local_model
    from .prompts import PromptTemplate
    from .records import FeatureExtra
    from .result import Attempt, LabelResult, Trajectory
    from .run.options import RunOptions
    from .run.pipeline import label_sae_features
    from .sae.activations import build_activation_cache
    from .sae.config import CacheConfig, ExampleConfig
    from .sae.corpus import Corpus

_EXPORTS = {
    "AmortizeConfig": ".config",
    "Amortizer": ".amortize",
    "CacheConfig": ".sae.config",
    "CompareConfig": ".comparison",
    "Comparison": ".comparison",
    "Corpus": ".sae.corpus",
    "ExampleConfig": ".sae.config",
    "LabelSet": ".labelset",
    "build_activation_cache": ".sae.activations",
    "label_sae_features": ".run.pipeline",
    "EncodedExample": ".evaluator",
    "Evaluator": ".evaluator",
    "EvaluatorError": ".evaluator",
    "Example": ".data",
    "FeatureData": ".data",
    "FeatureDataError": ".data",
    "LabelConfig": ".config",
    "PerformanceConfig": ".config",
    "Attempt": ".result",
    "FeatureExtra": ".records",
    "RunOptions": ".run.options",
    "LabelResult": ".result",
    "PromptTemplate": ".prompts",
    "Trajectory": ".result",
    "label_feature": ".labeler",
    "read_explanations": ".explanations",
    "label_features_data": ".labeler",
    "load_evaluator_model": ".loading",
    "load_local_model": ".loading",
    "save_local_model": ".loading",
}

__all__ = [
    "AmortizeConfig",
    "Amortizer",
    "CacheConfig",
    "CompareConfig",
    "Comparison",
    "Corpus",
    "ExampleConfig",
    "LabelSet",
    "build_activation_cache",
    "label_sae_features",
    "EncodedExample",
    "Evaluator",
    "EvaluatorError",
    "Example",
    "FeatureData",
    "FeatureDataError",
    "LabelConfig",
    "PerformanceConfig",
    "Attempt",
    "FeatureExtra",
    "RunOptions",
    "LabelResult",
    "PromptTemplate",
    "Trajectory",
    "label_feature",
    "read_explanations",
    "label_features_data",
    "load_evaluator_model",
    "load_local_model",
    "save_local_model",
    "__version__",
]

__getattr__, __dir__ = lazy_exports(
    __name__, _EXPORTS, submodules=("cli", "report", "run", "sae", "toy"))

install_now_or_on_import()
