"""saelens-tokenlabel: label SAE features by token-space gradient descent.

Schulz & Fallows, "Automated Feature Labeling with Token-Space Gradient Descent"
(arXiv 2504.00754). Importing this package does no I/O and loads no model.
"""

from .config import LabelConfig
from .data import Example, FeatureData, FeatureDataError
from .evaluator import EncodedExample, Evaluator, EvaluatorError
from .labeler import label_feature, label_features_data
from .loading import load_evaluator_model, load_local_model, save_local_model
from .prompts import PromptTemplate
from .result import LabelResult, Trajectory
from .run.pipeline import label_sae_features
from .run.plugin import install as _install_sae_plugin
from .sae import (
    CacheConfig,
    Corpus,
    ExampleConfig,
    LabelSet,
    build_activation_cache,
)

__version__ = "0.1.0"

# The SAELens plugin: every SAE class gets `label_features` (see run/plugin.py).
_install_sae_plugin()

__all__ = [
    "CacheConfig",
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
    "LabelResult",
    "PromptTemplate",
    "Trajectory",
    "label_feature",
    "label_features_data",
    "load_evaluator_model",
    "load_local_model",
    "save_local_model",
    "__version__",
]
