"""LabelConfig: every knob of one labeling run, checked on construction."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .serial import Config
from .verdict import DEFAULT_BAR, DEFAULT_LEVEL, VerdictSettings

# Table 1 of Schulz & Fallows (2025): batch size, epochs, lr, λ_kl, λ_ent (λ_acc = 1).
_PAPER_TABLE_1: dict[str, tuple[int, int, float, float, float]] = {
    "animals": (10, 50, 0.03, 0.2, 0.2),
    "mammals": (10, 100, 0.2, 0.1, 0.3),
    "chinese": (25, 100, 0.5, 0.05, 0.25),
    "numbers": (20, 10, 0.1, 0.2, 0.2),
    "mammal_text": (20, 10, 0.1, 0.2, 0.2),
    "palindromes": (15, 15, 0.1, 0.2, 0.2),
}


# The objective's weights (issue 21): λ_ent > λ_kl, so that the regulariser's optimum is a
# single token. Why, and what was measured: `LabelConfig.lambda_ent`.
_OBJECTIVE: dict[str, float] = {"lambda_ent": 0.3, "lambda_kl": 0.1}

# Later attempts when an attempt fails (no convergence, or a poor validation score), each from
# its own seed: the search changes (confusion-stratified batches, twice attempt 0's lr, an
# entropy warm-up), the objective stays `_OBJECTIVE` even where attempt 0's was set otherwise.
# With attempt 0 at lr 0.1 the first restart's lr is 0.2 (it was 0.1, attempt 0's now): on the
# noisy and union features of bench/bench_objective.py, the only cases whose attempt 0 fails
# there, that took 5495 and 3610 steps (4 seeds) instead of 7166 and 4457, same labels.
DEFAULT_RESTARTS: tuple[dict[str, Any], ...] = (
    {"sampler": "confusion", "lr": 0.2, **_OBJECTIVE, "seed": 1},
    {"lr": 0.2, **_OBJECTIVE, "entropy_warmup": 0.3, "seed": 2},
)

# What a refinement changes (`optimize.refine`): confusion-stratified batches, at attempt 0's
# lr and with `_OBJECTIVE` whatever the refined attempt's values, so that a label held by the
# prior in a mixture with the one that fixes its errors resolves (with λ_ent = λ_kl = 0.2 the
# soft label of a mammal feature sat at 60% "animal", 40% "mammal" for 500 steps).
DEFAULT_REFINEMENT: dict[str, Any] = {"sampler": "confusion", "lr": 0.1, **_OBJECTIVE}

# What a restart may change: the search itself, not the data, the scoring or the stopping rule.
RESTART_KEYS = frozenset({"lr", "lambda_acc", "lambda_ent", "lambda_kl", "seed", "init_std",
                          "sampler", "confusion_every", "entropy_warmup", "temperature_final",
                          "temperature_steps", "max_attempt_steps",
                          "straight_through", "batch_size",
                          "epochs", "steps", "prediction"})


@dataclass
class PerformanceConfig(Config):
    """Speed and memory knobs of a labeling run. None of them changes a result (each is
    tested exact), so a run may be resumed with other values, e.g. fewer rows per pass after
    running out of memory."""

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
    fast_suffix: bool = True
    """With `use_cache`: run the suffix through the package's lean forward
    (`suffix.SuffixRunner`) instead of TransformerLens's modules, for HookedTransformers of the
    Llama, Qwen 2, Mistral, Gemma 1-3 and GPT-2 families, unnormalised and attention-only ones.
    Exact (the same logits, tested to 1e-12 in float64); other architectures keep
    TransformerLens's path, with one log line saying why."""

    def check(self) -> None:
        need = self.need
        need(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        need(self.max_rows_per_pass is None or self.max_rows_per_pass >= 1,
             "max_rows_per_pass must be >= 1 or None")
        need(self.max_resident_examples is None or self.max_resident_examples >= 1,
             "max_resident_examples must be >= 1 or None")


@dataclass
class WarmStartConfig(Config):
    """How a warm start turns a decoder direction's promoted subject tokens into initial label
    logits over the evaluator's vocabulary (`sae.logit_lens.warm_start_logits`)."""

    top_k: int = 20
    """Top subject tokens of the decoder's logit lens that are matched (most promoted first)."""
    scale: float = 5.0
    """Initial logit of the top subject token's evaluator matches (ignored with `top_mass`)."""
    temperature: float = 1.0
    """How fast weaker promoted tokens fall off: ``scale * exp((z - z_top) / temperature)``."""
    casefold: bool = False
    """Match token texts case-insensitively."""
    top_mass: float | None = None
    """In (0, 1): set `scale` so the top token alone holds this initial probability mass
    among the allowed tokens (the same `scale` means very different starts in a 1,000-token and
    a 128,000-token vocabulary; a mass does not). None: use `scale`."""

    def check(self) -> None:
        self.need(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        self.need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.need(self.scale >= 0, f"scale must be >= 0, got {self.scale}")
        self.need(self.top_mass is None or 0 < self.top_mass < 1,
                  f"top_mass must be in (0, 1), got {self.top_mass}")

    def start_logit(self, n_allowed: int) -> float:
        """The top token's initial logit among `n_allowed` allowed tokens: `scale`, or with
        `top_mass` ``log(top_mass / (1 - top_mass) * (n_allowed - 1))``, so that the top token
        alone would hold `top_mass` of the initial probability among the allowed tokens
        (other matched tokens add to it: " cat" and "cat" both start there)."""
        if self.top_mass is None:
            return self.scale
        n = max(n_allowed, 2)
        return math.log(self.top_mass / (1 - self.top_mass) * (n - 1))


@dataclass
class LabelConfig(Config):
    """Hyperparameters of token-space gradient descent.

    The defaults start from the paper's Table 1 (the animal preset's batches and epochs, the
    mammal preset's loss weights, the lr of three of its six presets) and add what the paper
    lists as missing (§4.1): early stopping once one token holds the label,
    confusion-stratified batches, and restarts with a small sweep when an attempt fails.
    `LabelConfig.preset(name)` is the paper's method as published (balanced batches, one
    attempt) with its Table 1 values."""

    lr: float = 0.1
    """Adam learning rate on the label logits v. Adam moves each logit by about `lr` per
    step, and p = softmax(v / T) by about lr / T (see `temperature_final`). 0.1 (Table 1's
    numbers, mammal_text and palindromes presets; it was the animal preset's 0.03 until issue
    21): with `lambda_ent` > `lambda_kl`, attempt 0 converged in 89 steps on average over the
    toy concepts against 136 at 0.03, and on the noisy features 6 times in 8 against never,
    with the same labels (bench/bench_objective.py)."""
    batch_size: int = 10
    """Examples (word-in-text ratings) per optimisation step, half active, half inactive."""
    epochs: float = 50
    """Passes over the examples; one epoch is ceil(n_examples / batch_size) steps."""
    steps: int | None = None
    """Exact number of steps. Overrides `epochs` when set."""
    max_attempt_steps: int | None = 500
    """Cap on the steps `epochs` gives one attempt (an explicit `steps` is exact). With the
    default temperature schedule a label converges within a few hundred steps; an attempt
    stuck past this is cut short so that the next restart gets its turn."""
    lambda_acc: float = 1.0
    """Weight of the accuracy loss (BCE of the prediction against the feature's activity)."""
    lambda_ent: float = _OBJECTIVE["lambda_ent"]
    """Weight of the entropy H(p) of the label distribution. Keep it above `lambda_kl`: the
    KL holds a -H(p) of its own, so the regulariser is

        λ_ent·H(p) + λ_kl·KL(p‖q) = (λ_ent − λ_kl)·H(p) − λ_kl·Σ_v p_v log q_v,

    entropy at weight λ_ent − λ_kl plus the cross-entropy to the evaluator's prior. With
    λ_ent > λ_kl it is strictly concave in p (H strictly concave, the rest linear), so its
    minimum over the simplex is a vertex, a single token, and at every vertex its slope
    towards a mixture is +∞ (H's), which no finite slope of the accuracy loss outweighs
    (a mixture the accuracy itself prefers, a noisy feature's hedge, can still hold).
    With λ_ent = λ_kl (0.2 and 0.2, the paper's animal preset and the default until issue
    21) it is linear in p: moving mass to a word the prior favours by Δ nats pays λ_kl·Δ per
    unit, and while the mixture still rates every example right it costs less than the right
    label alone (the context world's meat feature under a prior for "animal" +3 nats: 0.86
    at 65% "meat", 1.03 at 100%), so attempt 0 sat in a mixture for all 500 steps. Annealing
    does not resolve such a mixture: the loss is a function of p, the same for every T, and
    its minima stay minima; T only scales how far a step moves p.

    0.3 and 0.1 (the mammal preset's, and the restarts' since before): measured by
    bench/bench_objective.py over 26 cases x 4 seeds against 0.2 and 0.2 (and 0.2/0.1,
    0.3/0.2, 0.4/0.1, a faster temperature decay); docs/better-labels.md has the table.
    Too much entropy commits the label before the accuracy has found it: at 0.4/0.1 attempt
    0 on the paper's animals dataset ended in a mixture in all four seeds (58% "mammal", 42%
    "number" in seed 0)."""
    lambda_kl: float = _OBJECTIVE["lambda_kl"]
    """Weight of KL(p || q), q the evaluator's next-token distribution at the label slot: a
    pull towards words the evaluator would itself write there. Below `lambda_ent` (see
    there), or the regulariser no longer favours a single token."""
    prediction: Literal["two_way", "full_vocab"] = "two_way"
    """`two_way`: the paper's softmax over the "1" and "0" logits. `full_vocab`: the authors'
    code's cross-entropy over the whole vocabulary with "1"/"0" as the target."""
    label_length: int = 1
    """Number of label tokens (label slots), each with its own distribution."""
    seed: int = 0
    """Seeds the batch order and any random init; the same seed gives the same label."""
    sampler: Literal["balanced", "confusion"] = "balanced"
    """`balanced`: the paper's batches, half active and half inactive examples.
    `confusion`: confusion-stratified (paper §4.1): every `confusion_every` steps the training
    examples are classified under the current hard label, and batches draw equally from its
    true positives, false negatives, false positives and true negatives (an empty bucket
    hands its share to the other bucket of its class, so batches stay half active)."""
    confusion_every: int = 10
    """Steps between re-classifications for the confusion sampler."""
    entropy_warmup: float = 0.0
    """Fraction of an attempt's steps over which λ_ent ramps linearly from 0 to `lambda_ent`
    (0: constant). A low early entropy weight lets the label explore before it commits."""
    temperature_final: float = 0.1
    """Temperature annealing: p = softmax(v / T), T decaying geometrically from 1 at the
    first step to this after `temperature_steps` steps, then staying there (1: no
    annealing). T < 1 sharpens p, so the soft label the evaluator reads approaches the hard
    label that is finally reported, and a mixture that only works as a mixture (a
    superset's token diluted by a subset's: "animal" + "mammal" read as "mammal") has to
    resolve. It changes how far a step moves p, not which p minimise the loss: a mixture the
    loss itself prefers stays (see `lambda_ent`)."""
    temperature_steps: int = 200
    """Steps over which T decays to `temperature_final` (capped at the attempt's length)."""
    straight_through: bool = False
    """Run the evaluator on the hard (argmax) label and pass the gradient to the soft one
    (straight-through, as in PEZ). The accuracy loss is then the reported label's own loss;
    entropy and KL stay on the soft p."""
    restarts: tuple[dict[str, Any], ...] = DEFAULT_RESTARTS
    """Further attempts, tried in order while no attempt has succeeded (see `success_score`):
    each dict overrides some of `lr`, `lambda_*`, `seed`, `sampler`, `entropy_warmup`, ...
    The best attempt by validation score is kept; all are recorded in `LabelResult.attempts`.
    Empty: a single attempt, as in the paper."""
    success_score: float = 0.9
    """An attempt succeeds when its label converged, its validation balanced accuracy (the
    training one without a validation split) is at least this, and it has no fixable
    errors (see `refine`); no further restarts then. A label's verdict starts from this
    test (`records.verdict`)."""
    verdict_bar: float = DEFAULT_BAR
    """A label that passes the success test is ``explained`` when the lower credible bound
    (`verdict_level`) of its held-out balanced accuracy reaches this; else ``weak``
    (`records.verdict`: Jeffreys posteriors of the two rates, convolved exactly)."""
    verdict_level: float = DEFAULT_LEVEL
    """Credibility of the held-out bound `verdict_bar` is judged against (one-sided)."""
    keep_attempt_trajectories: bool = False
    """Also keep the trajectories of the attempts that were not selected (larger results)."""
    prior_beam: int = 8
    """Labels of two or more tokens (`label_length` >= 2): when the first attempt fails, up to
    this many attempts start from the evaluator's own proposals: one of its likeliest first
    label tokens (q at the label slot) continued by its likeliest next tokens (q given the
    earlier ones). Tokens that mean something only together ("ve" + "hicle") give no gradient
    one at a time; a proposal puts both in place. 0: off."""
    grow_label: bool = False
    """Grow the label: start with `label_length` slots and add one (the earlier slots warm
    started from the previous solution) while the validation balanced accuracy improves by at
    least `grow_min_gain`, up to `max_label_length` slots."""
    max_label_length: int = 3
    """Most label slots `grow_label` may reach."""
    grow_min_gain: float = 0.02
    """Validation balanced accuracy gain (`result.selection_score`) needed to keep a longer
    label."""
    warm_start: bool = False
    """SAE runs: initialise v from the tokens the feature's decoder direction promotes in the
    subject model (logit lens `W_dec[f] @ W_U`, matched to the evaluator's vocabulary by
    token text). Without an SAE (synthetic data) there is nothing to warm start from."""
    warm_start_options: WarmStartConfig = field(
        default_factory=lambda: WarmStartConfig(top_mass=0.5))
    """How the warm start turns the promoted tokens into initial logits: by default the top
    matched token holds half the probability at the first step (`top_mass` 0.5). Attempt 0
    starts there; restarts start cold, and the best attempt by validation score is kept."""
    init_std: float = 0.0
    """Std of Gaussian noise on the initial logits v (0: uniform p over allowed tokens)."""
    holdout_fraction: float = 0.2
    """Fraction of active and of inactive examples (by context: see `splits`) held out of the
    optimisation and of the choice between attempts, used only to score the label chosen
    (`heldout_*` metrics). 0: no held-out score."""
    validation_fraction: float = 0.2
    """Fraction of active and of inactive examples (by context) held out of the optimisation
    to choose between attempts (`validation_*` metrics). 0: attempts are chosen by their
    training scores."""
    refine: bool = True
    """After an attempt whose label converged but still gets training examples wrong that
    another label of its short-list gets right (fixable errors, `optimize.refine`), run one
    more attempt from that label: confusion-stratified, its error buckets holding only the
    fixable errors. This is what finds "mammal" rather than "animal" when the animals that
    are not mammals are rare in the text. A label without fixable errors costs nothing."""
    refine_overrides: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REFINEMENT))
    """What a refinement changes in the attempt's config (keys as for `restarts`)."""
    refine_candidates: int = 6
    """Short-list size for the fixable-error check: the tokens (per slot) that held the most
    probability during the attempt, the label's own excepted."""
    polysemantic_check: bool = True
    """When no label succeeds, test whether two labels from the search explain the feature
    together (it fires on either concept) and flag it (`LabelResult.polysemantic`)."""
    threshold: float | None = None
    """Absolute activation threshold: active iff activation > threshold. Overrides the fraction."""
    threshold_fraction: float = 0.0
    """Active iff activation > threshold_fraction * max activation of the feature. The default,
    0, is "active iff the feature fires": an SAE has already decided its sparsity, and its
    activations are heavy-tailed, so most instances of a concept fire weakly; a fraction of
    the max would train the label against the concept's own weak members (delphi likewise
    draws activating examples from every quantile of the nonzero activations). 0/1 data
    (`FeatureData.from_marked_text`, the synthetic datasets) is the same under any fraction."""
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
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    """Speed and memory knobs (prefix cache, rows per pass, batch sizes): never the result."""

    MOVED_FIELDS: ClassVar[dict[str, str]] = {}  # filled below, from PerformanceConfig's fields

    def check(self) -> None:
        need = self.need
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.batch_size >= 2, f"batch_size must be >= 2 (one active, one inactive), got "
             f"{self.batch_size}")
        need(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        need(self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.max_attempt_steps is None or self.max_attempt_steps >= 1,
             "max_attempt_steps must be >= 1 or None")
        for name in ("lambda_acc", "lambda_ent", "lambda_kl"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        self.choice("prediction", ("two_way", "full_vocab"))
        need(self.label_length >= 1, f"label_length must be >= 1, got {self.label_length}")
        need(0 <= self.holdout_fraction < 1,
             f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        need(0 <= self.validation_fraction < 1,
             f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        need(self.holdout_fraction + self.validation_fraction < 1,
             "holdout_fraction + validation_fraction must be < 1 (training needs examples)")
        need(self.refine_candidates >= 1, "refine_candidates must be >= 1")
        need(0 <= self.threshold_fraction < 1,
             f"threshold_fraction must be in [0, 1), got {self.threshold_fraction}")
        need(0 < self.convergence_mass <= 1,
             f"convergence_mass must be in (0, 1], got {self.convergence_mass}")
        need(self.convergence_patience >= 1, "convergence_patience must be >= 1")
        need(self.trajectory_top_k >= 1, "trajectory_top_k must be >= 1")
        need(self.init_std >= 0, "init_std must be >= 0")
        self.choice("sampler", ("balanced", "confusion"))
        need(self.confusion_every >= 1, "confusion_every must be >= 1")
        need(0 <= self.entropy_warmup <= 1,
             f"entropy_warmup must be in [0, 1], got {self.entropy_warmup}")
        need(0 < self.temperature_final <= 1,
             f"temperature_final must be in (0, 1], got {self.temperature_final}")
        need(self.temperature_steps >= 1, "temperature_steps must be >= 1")
        need(0 < self.success_score <= 1, "success_score must be in (0, 1]")
        need(0 <= self.verdict_bar <= 1, f"verdict_bar must be in [0, 1], got {self.verdict_bar}")
        need(0.5 <= self.verdict_level < 1,
             f"verdict_level must be in [0.5, 1), got {self.verdict_level}")
        need(self.max_label_length >= self.label_length,
             f"max_label_length ({self.max_label_length}) must be >= label_length "
             f"({self.label_length})")
        need(self.prior_beam >= 0, "prior_beam must be >= 0")
        if self.restarts is None:
            self.restarts = ()
        if isinstance(self.restarts, dict):
            self.restarts = (self.restarts,)
        self.restarts = tuple(dict(r) for r in self.restarts)
        for r in self.restarts:
            bad = sorted(set(r) - RESTART_KEYS)
            need(not bad, f"restarts may only override {sorted(RESTART_KEYS)}; got {bad}")
            # Fail now, not after the first attempt: each restart must make a valid config.
            dataclasses.replace(self, restarts=(), **r)
        self.refine_overrides = dict(self.refine_overrides)
        bad = sorted(set(self.refine_overrides) - RESTART_KEYS)
        need(not bad, f"refine_overrides may only override {sorted(RESTART_KEYS)}; got {bad}")
        if self.refine_overrides:
            dataclasses.replace(self, restarts=(), refine_overrides={}, **self.refine_overrides)

    def verdict_settings(self) -> VerdictSettings:
        """The bars a label of this config is judged by."""
        return VerdictSettings(self.success_score, self.verdict_bar, self.verdict_level)

    def total_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        per_epoch = -(-n_examples // self.batch_size)
        n = max(1, round(self.epochs * per_epoch))
        return n if self.max_attempt_steps is None else min(n, self.max_attempt_steps)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LabelConfig:
        """The paper's Table 1 hyperparameters for one of its synthetic datasets."""
        if name not in _PAPER_TABLE_1:
            raise KeyError(f"No preset {name!r}; choose one of {sorted(_PAPER_TABLE_1)}.")
        batch, epochs, lr, kl, ent = _PAPER_TABLE_1[name]
        values: dict[str, Any] = dict(batch_size=batch, epochs=epochs, lr=lr, lambda_kl=kl,
                                      lambda_ent=ent, sampler="balanced", restarts=(),
                                      temperature_final=1.0, max_attempt_steps=None,
                                      validation_fraction=0.0, refine=False,
                                      polysemantic_check=False)
        values.update(overrides)
        return cls(**values)

    def attempt_configs(self) -> list[tuple[dict[str, Any], LabelConfig]]:
        """Attempt 0 (this config) and one per restart: (overrides, config)."""
        base = dataclasses.replace(self, restarts=())
        return [({}, base)] + [(dict(r), dataclasses.replace(base, **r)) for r in self.restarts]

    def lambda_ent_at(self, step: int, total: int) -> float:
        """λ_ent at `step` of an attempt of `total` steps (the `entropy_warmup` ramp)."""
        if self.entropy_warmup <= 0:
            return self.lambda_ent
        ramp = max(1.0, self.entropy_warmup * total)
        return self.lambda_ent * min(1.0, (step + 1) / ramp)

    def temperature_at(self, step: int, total: int) -> float:
        """T at `step` of an attempt of `total` steps (geometric decay to `temperature_final`)."""
        horizon = min(self.temperature_steps, total) - 1
        if self.temperature_final >= 1 or horizon <= 0:
            return 1.0
        return self.temperature_final ** (min(step, horizon) / horizon)

    def result_settings(self) -> dict[str, Any]:
        """The settings that decide results: `to_dict` without `performance` (speed and
        memory only, each tested exact), so a run may be resumed with other values of those,
        e.g. fewer rows per pass after running out of memory."""
        d = self.to_dict()
        del d["performance"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelConfig:
        """The config of `to_dict`'s output. Older files kept fields at the top level that are
        nested now (``use_cache``, ... into `performance`; ``warm_start_top_k``,
        ``warm_start_top_mass`` into `warm_start_options`): they move there."""
        d = dict(d)
        for old, (field_name, _, new) in _MOVED_INTO.items():
            if old in d:
                nested = d.get(field_name)
                nested = nested.to_dict() if isinstance(nested, Config) else dict(nested or {})
                d[field_name] = {new: d.pop(old), **nested}
        return super().from_dict(d)


_PERFORMANCE_FIELDS = tuple(f.name for f in dataclasses.fields(PerformanceConfig))
# Fields that moved into a nested config, old name -> field there: generated, one entry each.
_MOVED_INTO = {**{name: ("performance", "PerformanceConfig", name)
                  for name in _PERFORMANCE_FIELDS},
               "warm_start_top_k": ("warm_start_options", "WarmStartConfig", "top_k"),
               "warm_start_top_mass": ("warm_start_options", "WarmStartConfig", "top_mass")}
LabelConfig.MOVED_FIELDS = {old: f"{field}={cls}({new}=...)"
                            for old, (field, cls, new) in _MOVED_INTO.items()}
