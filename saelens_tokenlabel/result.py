"""LabelResult and Trajectory: what a labeling run returns, JSON round-trippable."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .files import json_finite  # noqa: F401  (re-exported: result.json_finite)
from .records import FeatureExtra, Record

RESULT_FORMAT_VERSION = 1
SCORE_KEYS = ("heldout_balanced_accuracy", "train_balanced_accuracy")
"""A label's score: held-out balanced accuracy of the hard label, else the training one (when
nothing was held out). The one rule for choosing among attempts, summaries and reports."""


def score_of(metrics: dict[str, Any]) -> tuple[str | None, float | None]:
    """The metric that scores a label (`SCORE_KEYS`, the first finite one) and its value."""
    for key in SCORE_KEYS:
        v = metrics.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return key, float(v)
    return None, None


def selection_score(metrics: dict[str, Any]) -> float:
    """`score_of` as a number to rank by: -inf when the label has no score."""
    value = score_of(metrics)[1]
    return float("-inf") if value is None else value


@dataclass
class Trajectory(Record):
    """Per-step record of the optimisation, stored column-wise. JSON: `Record.to_dict` (the
    `tokens` keys as strings)."""

    step: list[int] = field(default_factory=list)
    """Step number (0-based) of each record."""
    loss: list[float] = field(default_factory=list)
    """Total loss at that step."""
    accuracy: list[float] = field(default_factory=list)
    """Accuracy (BCE) term."""
    entropy: list[float] = field(default_factory=list)
    """Entropy term H(p), summed over slots."""
    kl: list[float] = field(default_factory=list)
    """KL(p‖q) term."""
    top_ids: list[list[list[int]]] = field(default_factory=list)
    """``[step][slot][k]`` ids of the top-k label tokens before that step's update."""
    top_probs: list[list[list[float]]] = field(default_factory=list)
    """``[step][slot][k]`` their probabilities."""
    tokens: dict[int, str] = field(default_factory=dict)
    """Decoded text of every token id that appears in `top_ids`."""

    def __len__(self) -> int:
        return len(self.step)

    def token_probability(self, token_id: int, slot: int = 0) -> list[float]:
        """Probability of one token per step (0 where it was outside the recorded top-k)."""
        out = []
        for ids, probs in zip(self.top_ids, self.top_probs, strict=True):
            row = dict(zip(ids[slot], probs[slot], strict=True))
            out.append(row.get(token_id, 0.0))
        return out


@dataclass
class LabelResult(Record):
    """The label found for one feature, how sure the optimisation is, and how it got there.

    Built once: code that adds to a result makes a new one with `dataclasses.replace` (e.g.
    ``replace(r, extra=r.extra.merged(more))``, ``replace(r, metrics={**r.metrics, **new})``)
    rather than writing into it. JSON: `Record.to_dict`/`from_dict` (keys this version does
    not know are ignored)."""

    label: str
    """The label text: the hard (argmax) token of each slot, decoded together."""
    label_tokens: list[str]
    """Decoded text of each slot's argmax token."""
    label_token_ids: list[int]
    """Evaluator token id of each slot's argmax token."""
    probability: float
    """Probability of the argmax token (the smallest over slots)."""
    converged: bool
    """Whether every slot's top token held `convergence_mass` for `convergence_patience` steps."""
    steps: int
    """Optimisation steps run."""
    metrics: dict[str, float]
    """Final loss terms and scores of the hard label (see README)."""
    trajectory: Trajectory
    """Per-step top tokens and loss terms."""
    feature: str | int = "feature"
    """Which feature this labels."""
    status: str = "ok"
    """`ok`, or why no label was found (e.g. `dead`)."""
    threshold: float | None = None
    """Activation threshold that made the binary targets."""
    threshold_rule: str = ""
    """How the threshold was chosen."""
    n_examples: int = 0
    """Rated examples (word in text) used."""
    n_active: int = 0
    """Of those, active ones."""
    n_heldout: int = 0
    """Of those, held out of the optimisation (scored in `heldout_*` metrics)."""
    converged_step: int | None = None
    """First step of the run of `convergence_patience` converged steps."""
    evaluator: str = ""
    """Evaluator model name."""
    config: dict[str, Any] = field(default_factory=dict)
    """The LabelConfig used."""
    extra: FeatureExtra = field(default_factory=FeatureExtra)
    """What the SAE stages know of the feature beyond its label: activation statistics,
    examples, word mapping, output side, a status message (`records.FeatureExtra`)."""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Every optimisation attempt (restarts and label lengths), in the order run: the config
    overrides, label, probability, converged, steps and scores of each; `selected` marks the
    one this result reports."""
    version: int = RESULT_FORMAT_VERSION
    """Format version of this record."""

    def __post_init__(self) -> None:
        if not isinstance(self.extra, FeatureExtra):
            raise TypeError(f"LabelResult.extra is a {type(self.extra).__name__}; pass a "
                            "FeatureExtra (FeatureExtra.from_dict(d) reads a plain dict).")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelResult:
        """The result of `to_dict`'s output (or a file); a missing trajectory is empty."""
        return super().from_dict({"trajectory": {}, **d})

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> LabelResult:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (
            f"LabelResult(feature={self.feature!r}, label={self.label!r}, "
            f"probability={self.probability:.3f}, converged={self.converged}, "
            f"steps={self.steps}, status={self.status!r})"
        )
