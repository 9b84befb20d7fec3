"""Amortised labels: a map from a feature's decoder vector to a label, learned from the labels
descents already found (SelfIE-style amortisation; Schulz & Fallows' descent supplies the
targets, which its discriminator has checked).

The map proposes; it never decides. `sae.proposals` scores every proposal as a hard label on
the feature's own examples with the evaluator, and the run (`run.amortized`) accepts only a
proposal that clears the same bar a descent must; any other feature is descended, warm-started
from the proposal.

A label here is a *class*: the token ids of one label found by a descent (one token, or
several for a multi-token label). The map scores every class it has seen, so it can only
propose a label that some descent found before: verification is what keeps it honest, and
refitting as descents arrive is what teaches it new labels.

Two maps, both closed-form on a few hundred labels, chosen by cross-validated top-1 accuracy
on the training labels (``method="auto"``):

* ``ridge``: multi-output ridge regression from the standardised inputs to the class targets
  (each label's final distribution over the classes' tokens for a one-token label, one-hot for
  a multi-token one), solved in the dual (n x n) or the primal (d x d), whichever is smaller;
* ``knn``: cosine nearest neighbours among the training features, a similarity-weighted vote.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from ...records.files import atomic_write, atomic_write_text
from ...records.result import LabelResult
from .config import AmortizeConfig

AMORTIZER_JSON = "amortizer.json"


@dataclass(frozen=True)
class Proposal:
    """The map's labels for one feature."""

    feature: int
    """The feature."""
    ranked: tuple[tuple[tuple[int, ...], float], ...]
    """The best classes, best first: (evaluator token ids, share of the map's non-negative
    class scores). Verification scores the first `AmortizeConfig.candidates`; a rejected
    proposal's descent is warm-started from all of them."""

    @property
    def token_ids(self) -> tuple[int, ...]:
        """The map's top label."""
        return self.ranked[0][0]


CV_MAX = 2000
"""Cross-validation looks at most this many training labels (a seeded sample): enough to tell
the maps apart, and bounded on a large SAE."""


@dataclass
class Amortizer:
    """A fitted map from feature inputs to label classes (module docstring)."""

    method: str
    """``"ridge"`` or ``"knn"``."""
    classes: list[tuple[int, ...]]
    """Each class's evaluator token ids."""
    class_text: list[str]
    """Each class's label text."""
    x_mean: Float[torch.Tensor, " d"]
    """Input mean (standardisation)."""
    x_scale: Float[torch.Tensor, " d"]
    """Input standard deviation (standardisation)."""
    weights: Float[torch.Tensor, "d c"] | None
    """Ridge weights on standardised inputs (``method="ridge"``)."""
    y_mean: Float[torch.Tensor, " c"]
    """Mean target (the ridge intercept)."""
    train_x: Float[torch.Tensor, "n d"] | None
    """Standardised training inputs, float32 (``method="knn"``)."""
    train_y: Float[torch.Tensor, "n c"] | None
    """Training targets (``method="knn"``)."""
    config: AmortizeConfig
    """The settings it was fitted with."""
    features: list[int]
    """The training features."""
    cv_accuracy: dict[str, float] = field(default_factory=dict)
    """Cross-validated top-1 accuracy of each map on (up to `CV_MAX` of) the training
    labels."""

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, x: Float[torch.Tensor, "n d"], results: Sequence[LabelResult],
            config: AmortizeConfig) -> Amortizer:
        """Fit on training inputs `x` (one row per result) and the labels of `results`."""
        if len(results) != len(x):
            raise ValueError(f"{len(x)} input rows for {len(results)} labels")
        classes, text, y = label_targets(results)
        x = x.double()
        mean = x.mean(0)
        scale = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(mean)
        xs = (x - mean) / scale
        cv: dict[str, float] = {}
        if len(x) >= config.folds:
            pick = _cv_sample(len(x), config.seed)
            cv = {m: cross_validate(xs[pick], y[pick], m, config) for m in ("ridge", "knn")}
        method = config.method
        if method == "auto":
            method = max(cv, key=lambda m: (cv[m], m == "ridge")) if cv else "ridge"
        ridge = method == "ridge"
        return cls(method, classes, text, mean, scale,
                   ridge_weights(xs, y, config.ridge) if ridge else None, y.mean(0),
                   None if ridge else xs.float(), None if ridge else y, config,
                   [int(r.feature) for r in results], cv)

    # ------------------------------------------------------------------ predict
    def scores(self, x: Float[torch.Tensor, "m d"]) -> Float[torch.Tensor, "m c"]:
        """Non-negative class scores of new inputs, each row summing to 1 (or all 0)."""
        xs = (x.double() - self.x_mean) / self.x_scale
        if self.method == "ridge":
            assert self.weights is not None
            raw = xs @ self.weights + self.y_mean
        else:
            assert self.train_x is not None and self.train_y is not None
            raw = knn_scores(self.train_x.double(), self.train_y, xs, self.config.knn)
        raw = raw.clamp_min(0)
        return raw / raw.sum(-1, keepdim=True).clamp_min(1e-12)

    def propose(self, x: Float[torch.Tensor, "m d"], features: Sequence[int], top: int = 5
                ) -> list[Proposal]:
        """One `Proposal` per row of `x`."""
        s = self.scores(x)
        out = []
        for row, f in enumerate(features):
            vals, idx = s[row].topk(min(top, s.shape[1]))
            out.append(Proposal(int(f), tuple((self.classes[int(i)], float(v))
                                              for i, v in zip(idx, vals, strict=True))))
        return out

    # ------------------------------------------------------------------ files
    def _tensors(self) -> dict[str, torch.Tensor]:
        named = {"x_mean": self.x_mean, "x_scale": self.x_scale, "y_mean": self.y_mean,
                 "weights": self.weights, "train_x": self.train_x, "train_y": self.train_y}
        return {k: v.contiguous() for k, v in named.items() if v is not None}

    def save(self, directory: str | Path) -> Path:
        """`amortizer.json` (settings, classes, accuracies) and the tensors it names. The
        tensors file is named by the training set, written first and the JSON last: a reader
        (another process) never pairs one map's JSON with another's tensors."""
        from safetensors.torch import save_file

        directory = Path(directory)
        meta = {"method": self.method, "classes": [list(c) for c in self.classes],
                "class_text": self.class_text, "features": self.features,
                "cv_accuracy": self.cv_accuracy, "config": self.config.to_dict(),
                "n_train": len(self.features)}
        tensors = f"amortizer-{digest_of(meta)}.safetensors"
        atomic_write(directory / tensors, lambda tmp: save_file(self._tensors(), str(tmp)))
        atomic_write_text(directory / AMORTIZER_JSON,
                          json.dumps({**meta, "tensors": tensors}, indent=1))
        for old in directory.glob("amortizer-*.safetensors"):
            if old.name != tensors:  # earlier fits
                old.unlink(missing_ok=True)
        return directory / AMORTIZER_JSON

    @classmethod
    def load(cls, directory: str | Path) -> Amortizer:
        """The map `save` wrote into `directory`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / AMORTIZER_JSON).is_file():
            raise FileNotFoundError(f"{directory} holds no {AMORTIZER_JSON}: fit a map with "
                                    "tokenlabel label --amortize first.")
        meta = json.loads((directory / AMORTIZER_JSON).read_text())
        t = load_file(str(directory / meta["tensors"]))
        return cls(meta["method"], [tuple(c) for c in meta["classes"]], meta["class_text"],
                   t["x_mean"], t["x_scale"], t.get("weights"), t["y_mean"], t.get("train_x"),
                   t.get("train_y"), AmortizeConfig.from_dict(meta["config"]),
                   meta["features"], meta["cv_accuracy"])


def digest_of(value: Any) -> str:
    """A short content hash of a JSON value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def training_subset(results: Sequence[LabelResult], max_train: int, seed: int
                    ) -> list[LabelResult]:
    """At most `max_train` of `results` (in their order): the first label of every class,
    then those whose feature has the smallest seeded hash. The subset of a larger set keeps
    what it can of a smaller one's, so refits change the map only where they must."""
    if len(results) <= max_train:
        return list(results)
    classes: dict[tuple[int, ...], int] = {}
    for i, r in enumerate(results):
        classes.setdefault(tuple(r.label_token_ids), i)
    keep = set(list(classes.values())[:max_train])

    def key(i: int) -> str:
        return hashlib.sha256(f"{seed}:{int(results[i].feature)}".encode()).hexdigest()

    rest = sorted((i for i in range(len(results)) if i not in keep), key=key)
    keep.update(rest[:max_train - len(keep)])
    return [results[i] for i in sorted(keep)]


def _cv_sample(n: int, seed: int) -> torch.Tensor:
    if n <= CV_MAX:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:CV_MAX].sort()[0]


def label_targets(results: Sequence[LabelResult]
                  ) -> tuple[list[tuple[int, ...]], list[str], Float[torch.Tensor, "n c"]]:
    """The classes (distinct labels, in first-seen order) and each result's target over them:
    a one-token label's final distribution over the classes' tokens (from the last step of its
    trajectory; the label's own class at least its probability), a multi-token label's class
    one-hot."""
    classes: dict[tuple[int, ...], int] = {}
    text: list[str] = []
    for r in results:
        key = tuple(int(i) for i in r.label_token_ids)
        if key not in classes:
            classes[key] = len(classes)
            text.append(r.label)
    single = {c[0]: i for c, i in classes.items() if len(c) == 1}
    y = torch.zeros(len(results), len(classes), dtype=torch.float64)
    for row, r in enumerate(results):
        own = classes[tuple(int(i) for i in r.label_token_ids)]
        traj = r.trajectory
        if len(r.label_token_ids) == 1 and traj.top_ids:
            for tok, p in zip(traj.top_ids[-1][0], traj.top_probs[-1][0], strict=True):
                if int(tok) in single:
                    y[row, single[int(tok)]] = float(p)
        y[row, own] = max(float(y[row, own]), float(r.probability), 1e-3)
        y[row] /= y[row].sum()
    return list(classes), text, y


def ridge_weights(x: Float[torch.Tensor, "n d"], y: Float[torch.Tensor, "n c"], lam: float
                  ) -> Float[torch.Tensor, "d c"]:
    """``W`` minimising ``|x W + mean(y) - y|² + lam |W|²``: in the dual (an n x n solve)
    when there are fewer labels than inputs, else in the primal (d x d); the same solution."""
    yc = y - y.mean(0)
    if len(x) <= x.shape[1]:
        eye = torch.eye(len(x), dtype=x.dtype)
        return (x.T @ torch.linalg.solve(x @ x.T + lam * eye, yc)).contiguous()
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    # Row-major, as a saved and reloaded map has it: the same layout, the same rounding.
    return torch.linalg.solve(x.T @ x + lam * eye, x.T @ yc).contiguous()


def knn_scores(train: Float[torch.Tensor, "n d"], y: Float[torch.Tensor, "n c"],
               x: Float[torch.Tensor, "m d"], k: int) -> Float[torch.Tensor, "m c"]:
    """Similarity-weighted vote of each row's `k` most cosine-similar training rows."""
    a = torch.nn.functional.normalize(x, dim=-1)
    b = torch.nn.functional.normalize(train, dim=-1)
    sim = a @ b.T
    vals, idx = sim.topk(min(k, len(train)), dim=-1)
    w = vals.clamp_min(0)
    return torch.einsum("mk,mkc->mc", w, y[idx])


def cross_validate(x: Float[torch.Tensor, "n d"], y: Float[torch.Tensor, "n c"], method: str,
                   config: AmortizeConfig) -> float:
    """Top-1 accuracy of `method` on held-out folds: does the map give each training
    feature's own label when that feature is left out?"""
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    hits = 0
    for fold in range(config.folds):
        test = order[fold::config.folds]
        keep = torch.ones(n, dtype=torch.bool)
        keep[test] = False
        if not keep.any() or not len(test):
            continue
        xt, yt = x[keep], y[keep]
        if method == "ridge":
            pred = x[test] @ ridge_weights(xt, yt, config.ridge) + yt.mean(0)
        else:
            pred = knn_scores(xt, yt, x[test], config.knn)
        hits += int((pred.argmax(-1) == y[test].argmax(-1)).sum())
    return hits / n


def init_logits(candidates: Sequence[tuple[tuple[int, ...], float]], d_vocab: int,
                start: float
                ) -> Float[torch.Tensor, " d_vocab"] | Float[torch.Tensor, "slot d_vocab"] | None:
    """Warm-start logits of a descent from weighted labels (token ids, weight): each label's
    tokens get ``start * weight / top weight`` in their slots, every other token 0 (the
    uniform start). One row for a one-token top label, one per slot otherwise (labels of
    other lengths are left out). None (a cold start) when no weight is positive."""
    live = [(ids, w) for ids, w in candidates if w > 0]
    if not live:
        return None
    ids0, top = max(live, key=lambda c: c[1])
    slots = len(ids0)
    v = torch.zeros(slots, d_vocab)
    for ids, w in live:
        if len(ids) != slots:
            continue
        for s, tok in enumerate(ids):
            v[s, int(tok)] = max(float(v[s, int(tok)]), start * w / top)
    return v[0] if slots == 1 else v
