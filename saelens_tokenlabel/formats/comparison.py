"""Head to head: a run's labels against existing explanations of the same features.

Layer 1 (results and configs): the records, the winner and tie rule, the summary with its
bootstrap interval, and the files (``compare.tsv``, ``compare.json``). The scoring itself needs
the evaluator and the SAE-side stages: `sae.compare`.

Both sides are scored the same way: as a hard label in the rating prompt's label slot, by the
same evaluator, on the held-out examples the run scored its own label on, with the detection
score `CompareConfig.metric` (held-out balanced accuracy by default).

**Ties.** A feature is a tie when the two scores differ by at most `tie_tolerance` (1e-9 by
default: equal up to float rounding, i.e. the two labels rate the held-out examples alike as
far as the metric sees). A looser rule would hide real differences in a per-feature count;
whether the differences are more than noise is what the bootstrap interval of the mean
difference says. A feature where either score is undefined (a held-out split with one class
only) is ``undefined``: counted apart, out of the mean and the interval.

**Interval.** The mean over features of (ours − theirs), with a percentile bootstrap
interval: `bootstrap_samples` resamples of the features with replacement, from a generator
seeded with `seed`, so the same comparison always gives the same interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records.files import atomic_write_lines, atomic_write_text, check_format, dumps_json
from ..records.serial import Config, Record
from .explanations import SourceInfo

METRICS = ("balanced_accuracy", "f1", "auroc", "accuracy", "precision", "recall")
"""The detection scores a comparison can rank by (`scores.detection_scores`, held out)."""
OURS, THEIRS, TIE, UNDEFINED = "ours", "theirs", "tie", "undefined"
WINNERS = (OURS, THEIRS, TIE, UNDEFINED)
"""A feature's outcome: our label scored higher, theirs did, within the tie tolerance, or a
score is undefined."""
COMPARE_TSV = "compare.tsv"
"""One line per compared feature, written into the run folder by ``tokenlabel compare``."""
COMPARE_JSON = "compare.json"
"""The whole `Comparison` (records and summary), written beside `COMPARE_TSV`."""
COMPARISON_FORMAT = "saelens_tokenlabel.Comparison"
COMPARISON_VERSION = 1
TSV_COLUMNS = ("feature", "winner", "difference", "ours", "ours_tokens", "ours_score",
               "theirs", "theirs_tokens", "theirs_score", "n_heldout", "n_heldout_active",
               "stored_score", "where")


@dataclass
class CompareConfig(Config):
    """How a comparison is scored and summarised."""

    metric: str = "balanced_accuracy"
    """The held-out detection score that ranks the two labels (one of `METRICS`)."""
    tie_tolerance: float = 1e-9
    """Scores this close are a tie (module docstring)."""
    bootstrap_samples: int = 10_000
    """Resamples of the features for the interval of the mean difference."""
    seed: int = 0
    """Seed of the bootstrap's generator."""
    level: float = 0.95
    """Coverage of the bootstrap interval."""
    features_per_batch: int = 16
    """Features whose held-out examples share one prefix pass (memory, not results)."""

    def check(self) -> None:
        self.choice("metric", METRICS)
        self.need(self.tie_tolerance >= 0, f"tie_tolerance must be >= 0, got "
                  f"{self.tie_tolerance}")
        self.need(self.bootstrap_samples >= 1, f"bootstrap_samples must be >= 1, got "
                  f"{self.bootstrap_samples}")
        self.need(0 < self.level < 1, f"level must be in (0, 1), got {self.level}")
        self.need(self.features_per_batch >= 1, f"features_per_batch must be >= 1, got "
                  f"{self.features_per_batch}")


@dataclass(frozen=True)
class ScoredLabel(Record):
    """One side of a comparison: a label written into the label slot, and its scores."""

    text: str
    """The label as written (ours: its tokens decoded; theirs: the explanation)."""
    token_ids: tuple[int, ...]
    """The evaluator's tokens in the label slot (theirs: the text tokenized without special
    tokens)."""
    n_tokens: int
    """``len(token_ids)``: a sentence in the slot is a different prompt from a word."""
    score: float | None
    """The comparison's metric on the held-out examples (None: undefined there)."""
    scores: dict[str, float | None] = field(default_factory=dict)
    """Every held-out detection score (``heldout_balanced_accuracy``, ...) and the mean
    accuracy loss (``heldout_loss_accuracy``)."""


@dataclass(frozen=True)
class FeatureComparison(Record):
    """Our label against theirs on one feature."""

    feature: int
    """The feature index."""
    ours: ScoredLabel
    """The run's label, re-scored."""
    theirs: ScoredLabel
    """The existing explanation, scored as a hard label."""
    winner: str
    """One of `WINNERS`."""
    difference: float | None
    """``ours.score - theirs.score`` (None: either is undefined)."""
    n_heldout: int
    """Held-out examples both were scored on."""
    n_heldout_active: int
    """How many of them the feature is active on."""
    stored_score: float | None
    """The metric as the run stored it for its label: `ours.score` reproduces it when the
    examples, split and evaluator are the run's."""
    where: str
    """Where the explanation was read (``file:line``)."""


@dataclass(frozen=True)
class ComparisonSummary(Record):
    """Wins, ties and losses over the features, and the mean difference with its interval."""

    metric: str
    """The held-out detection score compared."""
    n_features: int
    """Features compared (with `undefined` ones)."""
    wins: int
    """Features where our label scores higher."""
    ties: int
    """Features within `tie_tolerance`."""
    losses: int
    """Features where the existing explanation scores higher."""
    undefined: int
    """Features where a score is undefined (left out of the means)."""
    mean_ours: float | None
    """Mean of our scores over the defined features."""
    mean_theirs: float | None
    """Mean of theirs over the same features."""
    mean_difference: float | None
    """Mean of ``ours - theirs`` (positive: our labels score higher)."""
    interval: tuple[float, float] | None
    """Percentile bootstrap interval of `mean_difference` at `level`."""
    level: float
    """The interval's coverage."""
    bootstrap_samples: int
    """Resamples behind the interval."""
    seed: int
    """The bootstrap generator's seed."""
    tie_tolerance: float
    """The tie rule's tolerance."""

    def line(self) -> str:
        """The summary on one line, as ``tokenlabel compare`` prints it."""
        head = (f"{self.n_features} features, held-out {self.metric}: ours wins {self.wins}, "
                f"ties {self.ties}, loses {self.losses}")
        if self.undefined:
            head += f" ({self.undefined} undefined)"
        if self.mean_difference is None:
            return head
        text = f"{head}; mean difference (ours - theirs) {self.mean_difference:+.3f}"
        if self.interval is not None:
            lo, hi = self.interval
            text += f", {self.level:.0%} bootstrap interval [{lo:+.3f}, {hi:+.3f}]"
        return text


@dataclass(frozen=True)
class Comparison(Record):
    """A run's labels against existing explanations: one record per feature, the summary,
    and what was left out."""

    summary: ComparisonSummary
    """Wins, ties, losses, mean difference and its interval."""
    features: tuple[FeatureComparison, ...]
    """One record per compared feature, by feature index."""
    source: SourceInfo
    """Where the explanations came from."""
    evaluator: str
    """The evaluator that scored both sides."""
    run_evaluator: str | None = None
    """The evaluator the run labeled with (scores are comparable with the run's only when
    it is `evaluator`)."""
    not_compared: dict[int, str] = field(default_factory=dict)
    """Features of the run (or asked for) left out, and why (no explanation, no label, ...)."""
    unused_explanations: int = 0
    """Explanations of features outside the comparison (not labeled in the run, or not
    asked for)."""
    notes: tuple[str, ...] = ()
    """Anything the reader should know about how this comparison was made."""

    def __getitem__(self, feature: int) -> FeatureComparison:
        for row in self.features:
            if row.feature == int(feature):
                return row
        raise KeyError(f"feature {feature} was not compared")

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": COMPARISON_FORMAT, "version": COMPARISON_VERSION, **self.to_dict()}

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Comparison:
        check_format(d, "comparison", COMPARISON_FORMAT, COMPARISON_VERSION)
        return cls.from_dict(d)

    def tsv_lines(self) -> list[str]:
        """`TSV_COLUMNS`, then one line per feature (tabs and line breaks in text as spaces)."""
        return ["\t".join(TSV_COLUMNS)] + [_tsv_row(r) for r in self.features]

    def table(self, head: int | None = 10) -> str:
        """A readable table of the first `head` features (None: all)."""
        rows = self.features if head is None else self.features[:head]
        lines = [f"{'feature':>7}  {'winner':9} {'ours':>6} {'theirs':>6}  ours label  |  "
                 "their explanation (tokens)"]
        for r in rows:
            lines.append(f"{r.feature:>7}  {r.winner:9} {_num(r.ours.score):>6} "
                         f"{_num(r.theirs.score):>6}  {_short(r.ours.text, 20)!r}  |  "
                         f"{_short(r.theirs.text, 50)!r} ({r.theirs.n_tokens})")
        if head is not None and len(self.features) > head:
            lines.append(f"... {len(self.features) - head} more in {COMPARE_TSV}")
        return "\n".join(lines)

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write `COMPARE_TSV` and `COMPARE_JSON` into `directory` (each atomically)."""
        directory = Path(directory)
        tsv = atomic_write_lines(directory / COMPARE_TSV, self.tsv_lines())
        return tsv, atomic_write_text(directory / COMPARE_JSON,
                                      dumps_json(self.to_json_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        """Read `COMPARE_JSON` (a file, or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / COMPARE_JSON
        return cls.from_json_dict(json.loads(path.read_text(encoding="utf-8")))


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _tsv_row(r: FeatureComparison) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return " ".join(str(v).split()) if isinstance(v, str) else str(v)

    return "\t".join(cell(v) for v in (
        r.feature, r.winner, r.difference, r.ours.text, r.ours.n_tokens, r.ours.score,
        r.theirs.text, r.theirs.n_tokens, r.theirs.score, r.n_heldout, r.n_heldout_active,
        r.stored_score, r.where))


def decide(ours: float | None, theirs: float | None, tolerance: float
           ) -> tuple[str, float | None]:
    """The winner of one feature (`WINNERS`) and ``ours - theirs`` (module docstring)."""
    if ours is None or theirs is None or not (math.isfinite(ours) and math.isfinite(theirs)):
        return UNDEFINED, None
    diff = ours - theirs
    if abs(diff) <= tolerance:
        return TIE, diff
    return (OURS if diff > 0 else THEIRS), diff


def bootstrap_interval(values: Sequence[float], samples: int = 10_000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (None for no values).
    Deterministic: the same values, samples and seed give the same interval."""
    if not values:
        return None
    # numpy here, not at the top: reading a comparison file should not need it.
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, (1 << 22) // n)  # resamples per draw: bounds the index array's memory
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        means[start : start + k] = data[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(rows: Iterable[FeatureComparison], config: CompareConfig) -> ComparisonSummary:
    """Wins, ties, losses and the mean difference with its bootstrap interval."""
    rows = list(rows)
    counts = {w: sum(r.winner == w for r in rows) for w in WINNERS}
    defined = [r for r in rows if r.winner != UNDEFINED]
    diffs = [r.difference for r in defined if r.difference is not None]

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return ComparisonSummary(
        metric=config.metric, n_features=len(rows), wins=counts[OURS], ties=counts[TIE],
        losses=counts[THEIRS], undefined=counts[UNDEFINED],
        mean_ours=mean([r.ours.score for r in defined if r.ours.score is not None]),
        mean_theirs=mean([r.theirs.score for r in defined if r.theirs.score is not None]),
        mean_difference=mean(diffs),
        interval=bootstrap_interval(diffs, config.bootstrap_samples, config.seed, config.level),
        level=config.level, bootstrap_samples=config.bootstrap_samples, seed=config.seed,
        tie_tolerance=config.tie_tolerance)
