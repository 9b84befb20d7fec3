"""Hard-label ratings remembered within a labeling call.

A hard label's rating of an example (logit "1" − logit "0", and for the full-vocabulary
prediction each answer's cross-entropy) depends on the label's tokens and the example only.
A feature's search asks for the same ratings again and again: the confusion sampler rates the
current label on every training example every few steps, so the attempt's final label has
mostly been rated on them when the attempt is scored; restarts and refinements often end on a
label an earlier attempt ended on; the error check rates short-list labels on errors and a
sample of right examples, and the refinement may end on one of them; the polysemantic check
rates the attempts' labels and their short-lists on training and validation examples that
the scoring rated already. `RatingMemo` keeps each (label, example) rating once computed, so
that within one labeling call (one `engine.StepContext`) each is computed once.

Exact: a rating is the same function of the same inputs wherever it is asked for; it is
remembered per prediction mode (the two-way prediction unembeds only the answer tokens, the
full-vocabulary one all of them: the same margin up to rounding, so never mixed). The memory
is bounded: at most `max_rows` (example, label) ratings are kept, the least recently used
labels going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from jaxtyping import Float, Int

Key = tuple[str, tuple[int, ...]]
"""(prediction mode, the label's token ids)."""
Compute = Callable[[Int[torch.Tensor, " n"], Int[torch.Tensor, "n slot"]],
                   Float[torch.Tensor, "n k"]]
"""Rates rows (example ids) under per-row labels: one row of values per example."""

MAX_ROWS = 1 << 20
"""Ratings kept per labeling call (a few tens of MB at most)."""


class _Rated:
    """One label's ratings: example ids (sorted) and their values."""

    __slots__ = ("rows", "values")

    def __init__(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        self.rows, self.values = rows, values

    def find(self, rows: Int[torch.Tensor, " n"]
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of `rows` are rated, and where their values are."""
        idx = torch.searchsorted(self.rows, rows).clamp_max(len(self.rows) - 1)
        return self.rows[idx] == rows, idx

    def add(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        merged = torch.cat([self.rows, rows])
        order = torch.argsort(merged)
        self.rows = merged[order]
        self.values = torch.cat([self.values, values.to(self.values.dtype)])[
            order.to(values.device)]


class RatingMemo:
    """Hard-label ratings of one labeling call (module docstring)."""

    def __init__(self, enabled: bool = True, max_rows: int = MAX_ROWS) -> None:
        self.enabled = enabled
        """False: every rating runs the evaluator (the benchmark's "before")."""
        self.max_rows = max_rows
        self._labels: OrderedDict[Key, _Rated] = OrderedDict()
        self._n_rows = 0
        self.computed = 0
        """Ratings computed (evaluator rows run)."""
        self.reused = 0
        """Ratings answered from memory."""

    def rate(self, mode: str, rows: Int[torch.Tensor, " n"],
             labels: Int[torch.Tensor, "n slot"], compute: Compute) -> Float[torch.Tensor, "n k"]:
        """Each row's rating under its label (`labels[i]` for `rows[i]`): remembered ones
        looked up, the rest computed by `compute` (each distinct (example, label) once) and
        remembered."""
        rows = rows.cpu().long()
        if not self.enabled or len(rows) == 0:
            self.computed += len(rows)
            return compute(rows, labels)
        uniq, inverse = torch.unique(labels.cpu(), dim=0, return_inverse=True)
        # Each distinct (label, example) pair once: one id made of both.
        base = int(rows.max()) + 1
        todo, back = torch.unique(inverse * base + rows, return_inverse=True)
        todo_label, todo_row = todo // base, todo % base
        found = torch.zeros(len(todo), dtype=torch.bool)
        values: torch.Tensor | None = None
        hits: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j, label in enumerate(uniq.tolist()):
            at = torch.nonzero(todo_label == j).flatten()
            rated = self._get((mode, tuple(label)))
            if rated is None:
                continue
            ok, idx = rated.find(todo_row[at])
            found[at[ok]] = True
            hits.append((at[ok], rated.values[idx[ok]]))
        missing = torch.nonzero(~found).flatten()
        if len(missing):
            new = compute(todo_row[missing], uniq[todo_label[missing]].to(labels.device))
            values = new.new_empty((len(todo), new.shape[1]))
            values[missing.to(new.device)] = new
            self._remember(mode, uniq, todo_label[missing], todo_row[missing], new)
        for at, vals in hits:
            if values is None:
                values = vals.new_empty((len(todo), vals.shape[1]))
            values[at.to(values.device)] = vals.to(values.dtype)
        assert values is not None
        self.computed += len(missing)
        self.reused += len(rows) - len(missing)
        return values[back.to(values.device)]

    def _get(self, key: Key) -> _Rated | None:
        rated = self._labels.get(key)
        if rated is not None:
            self._labels.move_to_end(key)
        return rated

    def _remember(self, mode: str, uniq: torch.Tensor, label_of: torch.Tensor,
                  rows: torch.Tensor, values: torch.Tensor) -> None:
        for j in torch.unique(label_of).tolist():
            at = torch.nonzero(label_of == j).flatten()
            key = (mode, tuple(uniq[j].tolist()))
            r, v = rows[at], values[at.to(values.device)]
            rated = self._get(key)
            if rated is None:
                order = torch.argsort(r)
                self._labels[key] = _Rated(r[order], v[order.to(v.device)])
            else:
                rated.add(r, v)
            self._n_rows += len(r)
        while self._n_rows > self.max_rows and len(self._labels) > 1:
            _, old = self._labels.popitem(last=False)
            self._n_rows -= len(old.rows)
