"""The evaluator (layer 3): the rating prompt around an LLM, and running it fast and exactly.

Owns the prompt, the label slot, backends (HookedTransformer, TransformerBridge), the forward
passes, the prefix cache, the lean suffix forward and model loading. May import `records/`,
`formats/`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records.lazy import lazy_exports

if TYPE_CHECKING:
    from .model import EncodedExample, Evaluator, EvaluatorError
    from .prompts import PromptTemplate

_EXPORTS = {"EncodedExample": ".model", "Evaluator": ".model", "EvaluatorError": ".model",
            "PromptTemplate": ".prompts"}
__all__ = ["EncodedExample", "Evaluator", "EvaluatorError", "PromptTemplate"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
