"""Whether a label explains its feature: the success test, the held-out evidence, the verdict.

One rule, one place. A label's score is its balanced accuracy on one split of its examples:
the *reported* score on the held-out split (else the training one, when nothing was held
out), the *selection* score on the validation split (else training), which chooses between
attempts and never sees the held-out examples (`split_score`). The descent's success test
(`passes`) asks for a converged label whose selection score reaches the bar with no fixable
errors left. A result's `Verdict` judges the same test on the selection split alone (training
errors another label fixes are refinement's business: the label kept scored better where it is
chosen) and adds the held-out evidence:

* ``explained``: the label passes the success test **and** its held-out balanced accuracy
  clears `verdict_bar` with the uncertainty of a small held-out set taken into account: the
  lower end of a one-sided credible interval (`verdict_level`) must reach it;
* ``weak``: a label was found, but the evidence does not clear the bar (the reason says
  which part fails);
* ``polysemantic``: no single label succeeded, but two from the search explain the feature
  together (`LabelResult.polysemantic`);
* ``dead``, ``nonfinite``, ``unlabelable``: no label (the result's status).

The interval. Balanced accuracy is the mean of two rates, the true-positive rate on the
active held-out examples and the true-negative rate on the inactive ones, each estimated from
a handful of examples (about 8 and 12 with the default example counts). Each rate gets its
Jeffreys posterior, Beta(k + 1/2, n - k + 1/2) (k right of n): the standard objective prior for
a binomial rate, which stays proper and sensible at k = n, where most good labels sit, and
whose intervals have close to nominal coverage at small n (Brown, Cai and DasGupta 2001),
unlike Wald's (zero width at k = n) or Clopper-Pearson's (very conservative at n = 8). The two
rates are independent given the label, so balanced accuracy's posterior is the distribution of
their mean: computed exactly by convolving the two posteriors on a grid of `GRID` cells each
(each cell's mass from the regularised incomplete beta function), with no sampling and no
normal approximation. A label right on all of 8 active and 12 inactive held-out examples has a
95% lower bound of 0.86; one error among the active ones, 0.77; chance (half right) about 0.3.
So the default bar (0.75) lets a right label through with one held-out slip, and never a
chance-level one, whatever its training and validation scores.

Layer 1: plain Python and numpy (imported when an interval is computed), no torch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, TypeVar

from .serial import Record

REPORTED = ("heldout", "train")
"""The splits a label is reported by, first finite first: held-out, else training."""
SELECTING = ("validation", "train")
"""The splits attempts are chosen by: validation, else training (never held-out)."""
VERDICTS = ("explained", "weak", "polysemantic", "dead", "nonfinite", "unlabelable")
"""Every verdict, best first (`Verdict.value`)."""
GRID = 1000
"""Cells per rate on [0, 1] in the exact convolution (the bound is exact to 1/(2 GRID))."""
DEFAULT_BAR = 0.75
"""`LabelConfig.verdict_bar`'s default (module docstring)."""
DEFAULT_LEVEL = 0.95
"""`LabelConfig.verdict_level`'s default."""


class Judged(Protocol):
    """What a verdict reads of a result (`LabelResult` has it)."""

    status: str
    converged: bool
    metrics: dict[str, Any]
    n_heldout: int
    polysemantic: Any
    extra: Any
    config: dict[str, Any]


J = TypeVar("J", bound=Judged)


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def split_score(metrics: Mapping[str, Any], splits: tuple[str, ...] = REPORTED
                ) -> tuple[str | None, float | None]:
    """The first split of `splits` whose balanced accuracy is finite in `metrics`: its metric
    name and value; (None, None) when there is none."""
    for split in splits:
        key = f"{split}_balanced_accuracy"
        v = metrics.get(key)
        if _finite(v):
            return key, float(v)
    return None, None


def selection_score(metrics: Mapping[str, Any]) -> float:
    """The score attempts are chosen by (`SELECTING`); -inf when a label has none."""
    value = split_score(metrics, SELECTING)[1]
    return float("-inf") if value is None else value


def fixable_errors(metrics: Mapping[str, Any], splits: tuple[str, ...] = ("train", "validation")
                   ) -> float:
    """Errors a short-list label fixes (`descent.refine`), on `splits` (training and
    validation)."""
    return sum(float(metrics.get(f"{k}_fixable_errors") or 0.0) for k in splits)


def selection_fixable_errors(metrics: Mapping[str, Any]) -> float:
    """Fixable errors on the split the label was chosen by (`SELECTING`: validation, else
    training). A verdict counts only these: the training split's are what refinement acts on,
    and a label it kept over the alternatives that fix them scored better where it is judged."""
    key = split_score(metrics, SELECTING)[0]
    return fixable_errors(metrics, (key.removesuffix("_balanced_accuracy"),)) if key else 0.0


def passes(result: Judged, bar: float) -> bool:
    """The descent's success test: converged, the selection score reaches `bar`, and no error
    it makes is one a short-list label fixes."""
    return (result.converged and selection_score(result.metrics) >= bar
            and not fixable_errors(result.metrics))


# ------------------------------------------------------------------------ the interval
def _betainc(a: float, b: float, x: Any) -> Any:
    """The regularised incomplete beta function I_x(a, b), vectorised over `x` (numpy), by
    its continued fraction (Lentz), on the side where it converges fast."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    out[x <= 0] = 0.0
    out[x >= 1] = 1.0
    inner = (x > 0) & (x < 1)
    xs = x[inner]
    flip = xs > (a + 1) / (a + b + 2)
    aa, bb = np.where(flip, b, a), np.where(flip, a, b)
    xx = np.where(flip, 1 - xs, xs)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_front = aa * np.log(xx) + bb * np.log1p(-xx) - log_beta
    value = np.exp(log_front) * _beta_cf(aa, bb, xx) / aa
    out[inner] = np.where(flip, 1 - value, value)
    return out


def _beta_cf(a: Any, b: Any, x: Any, iters: int = 300) -> Any:
    """The continued fraction of the incomplete beta function (Numerical Recipes' betacf),
    until every entry has converged to float64 precision."""
    import numpy as np

    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c = np.ones_like(x)
    d = 1 - qab * x / qap
    d = 1 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + aa * d
            d = 1 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1 + aa / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            step = d * c
            h = h * step
        if bool(np.all(np.abs(step - 1) < 1e-15)):
            break
    return h


def _rate_cells(right: int, n: int) -> Any:
    """The Jeffreys posterior of a rate (`right` of `n`) as the mass of each of `GRID` cells."""
    import numpy as np

    edges = np.linspace(0.0, 1.0, GRID + 1)
    return np.diff(_betainc(right + 0.5, n - right + 0.5, edges))


@functools.lru_cache(maxsize=4096)  # a large run has few distinct (counts, level)
def balanced_accuracy_interval(tp: int, n_pos: int, tn: int, n_neg: int,
                               level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """One-sided credible bounds of balanced accuracy, (lower, upper), each at `level`: the
    `1 - level` and `level` quantiles of its posterior (module docstring). Needs examples of
    both classes."""
    import numpy as np

    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"balanced accuracy needs both classes; got {n_pos} active and "
                         f"{n_neg} inactive examples")
    mass = np.convolve(_rate_cells(tp, n_pos), _rate_cells(tn, n_neg))
    # Cells i and j hold rates near (i + 1/2)/GRID and (j + 1/2)/GRID: their mean is near
    # (i + j + 1)/(2 GRID); the cumulative mass up to cell k is read at its upper edge.
    cdf = np.cumsum(mass)
    upper_edges = (np.arange(len(mass)) + 1.5) / (2 * GRID)

    def quantile(q: float) -> float:
        return float(np.clip(np.interp(q, cdf, upper_edges), 0.0, 1.0))

    return quantile(1 - level), quantile(level)


# ------------------------------------------------------------------------ the verdict
@dataclass(frozen=True)
class Verdict(Record):
    """Whether a label explains its feature, and the evidence (module docstring)."""

    value: str
    """``explained``, ``weak``, ``polysemantic``, ``dead``, ``nonfinite`` or ``unlabelable``."""
    reason: str
    """Why, in one line."""
    passes: bool = False
    """The success test on the selection split: converged, selection score >=
    `success_score`, no fixable errors on that split (`selection_fixable_errors`)."""
    heldout: float | None = None
    """Held-out balanced accuracy (None: no held-out examples of both classes)."""
    low: float | None = None
    """Lower credible bound (`level`) of the held-out balanced accuracy."""
    high: float | None = None
    """Upper credible bound (`level`)."""
    counts: tuple[int, int, int, int] | None = None
    """Held-out (active rated right, active, inactive rated right, inactive)."""
    success_score: float = 0.9
    """The success test's bar on the selection score."""
    bar: float = DEFAULT_BAR
    """What `low` must reach for ``explained``."""
    level: float = DEFAULT_LEVEL
    """The credibility of each bound."""
    derived: bool = False
    """Computed when a result written before verdicts existed was read (never written back,
    so older files stay as they were)."""

    @property
    def explained(self) -> bool:
        return self.value == "explained"

    def short(self) -> str:
        """``explained 0.95 [0.86, 1.00]``: the verdict and its held-out evidence."""
        if self.heldout is None:
            return self.value
        span = "" if self.low is None else f" [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.value} {self.heldout:.2f}{span}"


@dataclass(frozen=True)
class VerdictSettings:
    """The bars a verdict is judged by (`LabelConfig` has them)."""

    success_score: float = 0.9
    bar: float = DEFAULT_BAR
    level: float = DEFAULT_LEVEL

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> VerdictSettings:
        """The settings of a result's recorded config (defaults where it has none)."""
        d = cls()
        return cls(float(config.get("success_score", d.success_score)),
                   float(config.get("verdict_bar", d.bar)),
                   float(config.get("verdict_level", d.level)))


def heldout_counts(metrics: Mapping[str, Any], n_heldout: int
                   ) -> tuple[int, int, int, int] | None:
    """(active right, active, inactive right, inactive) on the held-out split: recorded by
    the scorer (``heldout_tp`` ...), or for an older result worked out from its recall,
    balanced accuracy and accuracy (even classes when those cannot tell)."""
    tp, fn, tn, fp = (metrics.get(f"heldout_{k}") for k in ("tp", "fn", "tn", "fp"))
    if _finite(tp) and _finite(fn) and _finite(tn) and _finite(fp):
        return int(tp), int(tp + fn), int(tn), int(tn + fp)
    tpr, ba, acc = (metrics.get(f"heldout_{k}") for k in ("recall", "balanced_accuracy",
                                                           "accuracy"))
    if not (n_heldout >= 2 and _finite(tpr) and _finite(ba) and _finite(acc)):
        return None
    tnr = 2 * ba - tpr
    pos = n_heldout / 2 if abs(tpr - tnr) < 1e-9 else (acc - tnr) * n_heldout / (tpr - tnr)
    n_pos = min(n_heldout - 1, max(1, round(pos)))
    n_neg = n_heldout - n_pos
    return round(tpr * n_pos), n_pos, round(tnr * n_neg), n_neg


def verdict_of(result: Judged, settings: VerdictSettings, derived: bool = False) -> Verdict:
    """The verdict of `result` (module docstring)."""
    s = settings
    if result.status != "ok":
        value = result.status if result.status in VERDICTS else "unlabelable"
        return Verdict(value, result.extra.message or f"status {result.status}",
                       success_score=s.success_score, bar=s.bar, level=s.level,
                       derived=derived)
    ok = (result.converged and selection_score(result.metrics) >= settings.success_score
          and not selection_fixable_errors(result.metrics))
    counts = heldout_counts(result.metrics, result.n_heldout)
    heldout = split_score(result.metrics, ("heldout",))[1]
    low = high = None
    if counts is not None and counts[1] and counts[3]:
        low, high = balanced_accuracy_interval(*counts, settings.level)
    value, reason = _judge(result, ok, low, settings)
    return Verdict(value, reason, passes=ok, heldout=heldout, low=low, high=high,
                   counts=counts, success_score=s.success_score, bar=s.bar, level=s.level,
                   derived=derived)


def _judge(result: Judged, ok: bool, low: float | None, s: VerdictSettings
           ) -> tuple[str, str]:
    if result.polysemantic is not None:
        return "polysemantic", result.polysemantic.describe()
    if not ok:
        return "weak", _why_not(result, s.success_score)
    if low is None:
        return "weak", ("no held-out examples of both classes to check the label on "
                        "(holdout_fraction, or more examples)")
    bound = f"{s.level:.0%} lower bound {low:.2f}"
    if low < s.bar:
        return "weak", f"held-out balanced accuracy's {bound} < {s.bar:g}"
    return "explained", f"passes the success test; held-out {bound} >= {s.bar:g}"


def _why_not(result: Judged, bar: float) -> str:
    if not result.converged:
        return "the label did not converge"
    score = selection_score(result.metrics)
    if score < bar:
        return f"selection balanced accuracy {score:.2f} < {bar:g}"
    split = (split_score(result.metrics, SELECTING)[0] or "").split("_")[0]
    return (f"{selection_fixable_errors(result.metrics):.0f} {split} errors that another "
            "label fixes")


def with_verdict(result: J, settings: VerdictSettings | None = None) -> J:
    """`result` with its verdict (a new record), judged by `settings` (default: those of its
    recorded config)."""
    settings = settings or VerdictSettings.of(result.config)
    return dataclasses.replace(result, verdict=verdict_of(result, settings))  # type: ignore
