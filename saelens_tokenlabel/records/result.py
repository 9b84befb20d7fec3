"""LabelResult and Trajectory: what a labeling run returns, JSON round-trippable."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .extra import FeatureExtra
from .serial import Record
from .verdict import REPORTED, Verdict, VerdictSettings, split_score, verdict_of

RESULT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Polysemantic(Record):
    """The flag on a feature no single label explains: two labels from its search that
    together do (the feature fires where either concept applies)."""

    labels: list[str]
    """The two labels."""
    label_token_ids: list[list[int]]
    """Their evaluator token ids."""
    balanced_accuracy: list[float]
    """Each label's balanced accuracy alone (training and validation examples)."""
    union_balanced_accuracy: float
    """Balanced accuracy of "either label says 1" on the same examples."""
    coverage: list[float]
    """Share of the active examples each label alone rates "1"."""

    def describe(self) -> str:
        """One line for reports and `tokenlabel status`."""
        return (f"polysemantic: {' + '.join(repr(x) for x in self.labels)} together "
                f"(balanced accuracy {self.union_balanced_accuracy:.2f}; alone "
                + ", ".join(f"{b:.2f}" for b in self.balanced_accuracy) + ")")


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
    metrics: dict[str, float | None]
    """Final loss terms and scores of the hard label (docs/better-labels.md): on each split
    (``train_``, ``validation_``, ``heldout_``), balanced accuracy, precision, recall, F1,
    AUROC and the confusion counts, and the SAE-side scorers' metrics."""
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
    """Of those, held out of the optimisation and of the choice between attempts: they only
    score the label chosen (`heldout_*` metrics)."""
    n_validation: int = 0
    """Of those, held out of the optimisation to choose between attempts (`validation_*`)."""
    converged_step: int | None = None
    """First step of the run of `convergence_patience` converged steps."""
    evaluator: str = ""
    """Evaluator model name."""
    config: dict[str, Any] = field(default_factory=dict)
    """The LabelConfig used."""
    extra: FeatureExtra = field(default_factory=FeatureExtra)
    """What the SAE stages know of the feature beyond its label: activation statistics,
    examples, word mapping, output side, a status message (`records.FeatureExtra`)."""
    polysemantic: Polysemantic | None = None
    """Set when one label does not explain the feature but two from its search do together
    (`optimize.polysemantic`); the `label` stays the one the search chose."""
    attempts: list[Attempt] = field(default_factory=list)
    """Every optimisation attempt (restarts and label lengths), in the order run: the config
    overrides, label, probability, converged, steps and scores of each; `selected` marks the
    one this result reports."""
    method: str = "descended"
    """How the label was found: ``"descended"`` (token-space gradient descent),
    ``"amortised"`` (proposed by a map learned from other features' labels and accepted after
    scoring on this feature's examples: no optimisation, `steps` 0; see
    `saelens_tokenlabel.run.amortise.map`) or ``"warm_started"`` (a descent started from a rejected
    proposal)."""
    verdict: Verdict | None = field(default=None, compare=False)
    """Whether the label explains the feature, with its evidence (`records.verdict`): set when
    the result is made; a result read from a file written before verdicts gets one derived
    from its metrics. A function of the rest of the result and its config, so left out of
    equality (a result read back equals the one written, derived verdict or not)."""
    version: int = RESULT_FORMAT_VERSION
    """Format version of this record."""

    LATER_FIELDS = frozenset({"n_validation", "polysemantic", "method", "verdict"})

    def __post_init__(self) -> None:
        if not isinstance(self.extra, FeatureExtra):
            raise TypeError(f"LabelResult.extra is a {type(self.extra).__name__}; pass a "
                            "FeatureExtra (FeatureExtra.from_dict(d) reads a plain dict).")

    @property
    def score(self) -> float | None:
        """The label's reported score: held-out balanced accuracy, else the training one."""
        return split_score(self.metrics, REPORTED)[1]

    @property
    def score_name(self) -> str | None:
        """Which metric `score` is."""
        return split_score(self.metrics, REPORTED)[0]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.verdict is not None and self.verdict.derived:
            del d["verdict"]  # not ours to add to an older file
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelResult:
        """The result of `to_dict`'s output (or a file); a missing trajectory is empty, and a
        result written before verdicts gets one derived from its metrics."""
        r = super().from_dict({"trajectory": {}, **d})
        if r.verdict is None:
            v = verdict_of(r, VerdictSettings.of(r.config), derived=True)
            r = dataclasses.replace(r, verdict=v)
        return r

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


@dataclass
class Attempt(Record):
    """One optimisation attempt of one feature (its first run, a prior proposal, a restart or a
    longer label), as `LabelResult.attempts` records it. JSON: `Record.to_dict`, `trajectory`
    and `rejected` left out when None (the layout results were first written in)."""

    attempt: int
    """Index of the attempt among this feature's attempts, in the order run (0, 1, 2, ...: the
    same whether the feature was labeled alone or batched with others); negative for the
    amortised proposals rejected before a warm-started descent (-1: the map's first), which
    ran no step."""
    overrides: dict[str, Any]
    """The config values this attempt changed (a restart's, ``prior_rank``, ``label_length``)."""
    label_length: int
    """Number of label slots."""
    label: str
    """The attempt's hard label text."""
    label_tokens: list[str]
    """Decoded text of each slot's argmax token."""
    label_token_ids: list[int]
    """Evaluator token id of each slot's argmax token."""
    probability: float
    """Probability of the argmax token (the smallest over slots)."""
    converged: bool
    """Whether the label converged (see `LabelResult.converged`)."""
    converged_step: int | None
    """First step of the converged run, None if it did not converge."""
    steps: int
    """Optimisation steps the attempt ran."""
    metrics: dict[str, float | None]
    """The attempt's loss terms and hard-label scores (None: undefined, e.g. one class only)."""
    selected: bool = False
    """Whether this is the attempt the result reports."""
    trajectory: Trajectory | None = None
    """Its trajectory (`keep_attempt_trajectories`), None when not kept."""
    rejected: str | None = None
    """Why a longer label was not kept (`grow_label`), or an amortised proposal was not
    accepted (`run.amortise.proposals`); None otherwise."""

    LATER_FIELDS = frozenset({"rejected", "trajectory"})
