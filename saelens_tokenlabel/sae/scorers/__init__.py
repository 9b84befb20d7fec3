"""SAE-side scorers: what a finished label is worth to the subject model and the SAE.

One module per scorer (`output_side`, `coherence`, `steering`), each registered by name with
the `registry` (the `Scorer` protocol; a user's own registers the same way), and `apply`:
which scorers a run uses (`ScoreConfig`) and running them (`add_sae_scores`).
Part of `sae/` (layer 5). Names load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...records.lazy import lazy_exports

if TYPE_CHECKING:
    from .apply import ScoreConfig, add_sae_scores
    from .coherence import CoherenceConfig, reflective_coherence
    from .output_side import OutputSideConfig
    from .registry import (
        DEFAULT_SCORERS,
        NoOptions,
        ScoreItem,
        Scorer,
        ScorerError,
        ScoreUpdate,
        get_scorer,
        known_scorers,
        register_scorer,
    )
    from .steering import SteeringConfig, steering_scores

_EXPORTS = {
    "ScoreConfig": ".apply", "add_sae_scores": ".apply",
    "CoherenceConfig": ".coherence", "reflective_coherence": ".coherence",
    "OutputSideConfig": ".output_side",
    "SteeringConfig": ".steering", "steering_scores": ".steering",
    **dict.fromkeys(("DEFAULT_SCORERS", "NoOptions", "ScoreItem", "Scorer", "ScorerError",
                     "ScoreUpdate", "get_scorer", "known_scorers", "register_scorer"),
                    ".registry"),
}
__all__ = [
    "DEFAULT_SCORERS",
    "CoherenceConfig",
    "NoOptions",
    "OutputSideConfig",
    "ScoreConfig",
    "ScoreItem",
    "ScoreUpdate",
    "Scorer",
    "ScorerError",
    "SteeringConfig",
    "add_sae_scores",
    "get_scorer",
    "known_scorers",
    "reflective_coherence",
    "register_scorer",
    "steering_scores",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
