"""LabelConfig: every knob of one labeling run, checked on construction."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

# Table 1 of Schulz & Fallows (2025): batch size, epochs, lr, λ_kl, λ_ent (λ_acc = 1).
_PAPER_TABLE_1: dict[str, tuple[int, int, float, float, float]] = {
    "animals": (10, 50, 0.03, 0.2, 0.2),
    "mammals": (10, 100, 0.2, 0.1, 0.3),
    "chinese": (25, 100, 0.5, 0.05, 0.25),
    "numbers": (20, 10, 0.1, 0.2, 0.2),
    "mammal_text": (20, 10, 0.1, 0.2, 0.2),
    "palindromes": (15, 15, 0.1, 0.2, 0.2),
}


@dataclass
class LabelConfig:
    """Hyperparameters of token-space gradient descent. The defaults are the paper's animal
    preset (Table 1, Fig. 3a), plus early stopping once one token holds the label."""

    lr: float = 0.03
    """Adam learning rate on the label logits v."""
    batch_size: int = 10
    """Examples (word-in-text ratings) per optimisation step, half active, half inactive."""
    epochs: float = 50
    """Passes over the examples; one epoch is ceil(n_examples / batch_size) steps."""
    steps: int | None = None
    """Exact number of steps. Overrides `epochs` when set."""
    lambda_acc: float = 1.0
    """Weight of the accuracy loss (BCE of the prediction against the feature's activity)."""
    lambda_ent: float = 0.2
    """Weight of the entropy H(p) of the label distribution (pushes towards one token)."""
    lambda_kl: float = 0.2
    """Weight of KL(p || q), q the evaluator's next-token distribution at the label slot."""
    prediction: Literal["two_way", "full_vocab"] = "two_way"
    """`two_way`: the paper's softmax over the "1" and "0" logits. `full_vocab`: the authors'
    code's cross-entropy over the whole vocabulary with "1"/"0" as the target."""
    label_length: int = 1
    """Number of label tokens (label slots), each with its own distribution."""
    seed: int = 0
    """Seeds the batch order and any random init; the same seed gives the same label."""
    init_std: float = 0.0
    """Std of Gaussian noise on the initial logits v (0: uniform p over allowed tokens)."""
    holdout_fraction: float = 0.2
    """Fraction of active and of inactive examples held out of the optimisation and used only
    to score the final label (`heldout_*` metrics). 0: score on the training examples only."""
    threshold: float | None = None
    """Absolute activation threshold: active iff activation > threshold. Overrides the fraction."""
    threshold_fraction: float = 0.5
    """Active iff activation > threshold_fraction * max activation of the feature."""
    exclude_special: bool = True
    """Keep special tokens (BOS, end of turn, headers) out of the label."""
    words_only: bool = False
    """Also keep tokens with no letter, and byte fragments, out of the label."""
    strip_word: bool = True
    """Strip surrounding whitespace from the word shown to the evaluator (" cat" -> "cat")."""
    convergence_mass: float = 0.9
    """The label has converged when every slot's top token holds at least this probability..."""
    convergence_patience: int = 20
    """...for this many consecutive steps."""
    stop_early: bool = True
    """Stop at convergence instead of running all steps."""
    trajectory_top_k: int = 10
    """Top tokens (and probabilities) recorded per step and slot in the trajectory."""
    use_cache: bool = True
    """Run the prompt prefix (everything before the label) once and reuse its KV cache.
    Exact: the same logits and gradients as re-running the whole prompt every step."""
    max_rows_per_pass: int | None = None
    """Split each step's batch into forward/backward passes of at most this many rows
    (gradients accumulate, so the step is the same). None: one pass. Halved automatically on
    out-of-memory."""
    max_resident_examples: int | None = None
    """Memory budget of the prefix cache: keep at most this many examples' keys/values on the
    device; evict the least recently used and recompute them when sampled again. None: all."""
    eval_batch_size: int = 64
    """Batch size for the prefix pass and for scoring the final hard label."""

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"LabelConfig: {msg}")

        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.batch_size >= 2, f"batch_size must be >= 2 (one active, one inactive), got "
             f"{self.batch_size}")
        need(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        need(self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        for name in ("lambda_acc", "lambda_ent", "lambda_kl"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.prediction in ("two_way", "full_vocab"),
             f"prediction must be 'two_way' or 'full_vocab', got {self.prediction!r}")
        need(self.label_length >= 1, f"label_length must be >= 1, got {self.label_length}")
        need(0 <= self.holdout_fraction < 1,
             f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        need(0 <= self.threshold_fraction < 1,
             f"threshold_fraction must be in [0, 1), got {self.threshold_fraction}")
        need(0 < self.convergence_mass <= 1,
             f"convergence_mass must be in (0, 1], got {self.convergence_mass}")
        need(self.convergence_patience >= 1, "convergence_patience must be >= 1")
        need(self.trajectory_top_k >= 1, "trajectory_top_k must be >= 1")
        need(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        need(self.max_rows_per_pass is None or self.max_rows_per_pass >= 1,
             "max_rows_per_pass must be >= 1 or None")
        need(self.max_resident_examples is None or self.max_resident_examples >= 1,
             "max_resident_examples must be >= 1 or None")
        need(self.init_std >= 0, "init_std must be >= 0")

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = -(-n_examples // self.batch_size)
        return max(1, round(self.epochs * per_epoch))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LabelConfig:
        """The paper's Table 1 hyperparameters for one of its synthetic datasets."""
        if name not in _PAPER_TABLE_1:
            raise KeyError(f"No preset {name!r}; choose one of {sorted(_PAPER_TABLE_1)}.")
        batch, epochs, lr, kl, ent = _PAPER_TABLE_1[name]
        values: dict[str, Any] = dict(batch_size=batch, epochs=epochs, lr=lr, lambda_kl=kl,
                                      lambda_ent=ent)
        values.update(overrides)
        return cls(**values)

    @staticmethod
    def preset_names() -> list[str]:
        return list(_PAPER_TABLE_1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
