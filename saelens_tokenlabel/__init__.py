"""saelens-tokenlabel: label SAE features by token-space gradient descent.

Schulz & Fallows, "Automated Feature Labeling with Token-Space Gradient Descent"
(arXiv 2504.00754). Importing this package does no I/O, loads no model and imports neither
torch nor SAELens: the public names below load on first access (PEP 562, see `lazy.py`).
The SAELens plugin (every SAE class gets `label_features`, see `run/plugin.py`) is installed
now when SAELens is already imported, else as soon as it is (`run/plugin_hook.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .records.lazy import lazy_exports
from .records.names import __version__
from .run.plugin_hook import install_now_or_on_import

if TYPE_CHECKING:
    from .descent.labeler import label_feature, label_features_data
    from .evaluator.loading import load_evaluator_model, load_local_model, save_local_model
    from .evaluator.model import EncodedExample, Evaluator, EvaluatorError
    from .evaluator.prompts import PromptTemplate
    from .formats.comparison import CompareConfig, Comparison
    from .formats.explanations import read_explanations
    from .formats.labelset import LabelSet
    from .records.config import LabelConfig, PerformanceConfig
    from .records.data import Example, FeatureData, FeatureDataError
    from .records.errors import RunInterrupted, TokenlabelError
    from .records.extra import FeatureExtra
    from .records.result import Attempt, LabelResult, Trajectory
    from .run.amortise.config import AmortizeConfig
    from .run.amortise.map import Amortizer
    from .run.options import RunOptions
    from .run.pipeline import label_sae_features
    from .run.stops import clean_stops
    from .run.threads import CpuThreads, cpu_threads
    from .sae.activations import build_activation_cache
    from .sae.config import CacheConfig, ExampleConfig
    from .sae.corpus import Corpus

_EXPORTS = {
    "AmortizeConfig": ".run.amortise.config",
    "Amortizer": ".run.amortise.map",
    "CacheConfig": ".sae.config",
    "CompareConfig": ".formats.comparison",
    "Comparison": ".formats.comparison",
    "Corpus": ".sae.corpus",
    "ExampleConfig": ".sae.config",
    "LabelSet": ".formats.labelset",
    "build_activation_cache": ".sae.activations",
    "label_sae_features": ".run.pipeline",
    "CpuThreads": ".run.threads",
    "cpu_threads": ".run.threads",
    "EncodedExample": ".evaluator.model",
    "Evaluator": ".evaluator.model",
    "EvaluatorError": ".evaluator.model",
    "Example": ".records.data",
    "FeatureData": ".records.data",
    "FeatureDataError": ".records.data",
    "LabelConfig": ".records.config",
    "PerformanceConfig": ".records.config",
    "Attempt": ".records.result",
    "FeatureExtra": ".records.extra",
    "RunOptions": ".run.options",
    "RunInterrupted": ".records.errors",
    "TokenlabelError": ".records.errors",
    "clean_stops": ".run.stops",
    "LabelResult": ".records.result",
    "PromptTemplate": ".evaluator.prompts",
    "Trajectory": ".records.result",
    "label_feature": ".descent.labeler",
    "read_explanations": ".formats.explanations",
    "label_features_data": ".descent.labeler",
    "load_evaluator_model": ".evaluator.loading",
    "load_local_model": ".evaluator.loading",
    "save_local_model": ".evaluator.loading",
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
    "CpuThreads",
    "cpu_threads",
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
    "RunInterrupted",
    "TokenlabelError",
    "clean_stops",
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
