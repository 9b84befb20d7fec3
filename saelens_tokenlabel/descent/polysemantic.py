"""Features no single label explains: is the feature the union of two concepts?

Run on a feature whose search found no label that succeeds. The candidates are the labels its
attempts ended on and the alternatives they weighed (`refine.short_list`). Each is rated on
the feature's training and validation examples (a sample of each class); the feature is
flagged polysemantic when two labels together ("either says 1") reach the success bar, clearly
better than either alone, and each covers active examples the other misses. The flag
(`result.Polysemantic`) travels with the result into the report, the export and
`tokenlabel status`; the label stays the better of the two, so nothing reads a plain one-concept
label without the flag beside it.
"""

from __future__ import annotations

import itertools

import torch

from ..records.config import LabelConfig
from ..records.result import Polysemantic
from .engine import StepContext
from .hardlabel import hard_label_margins
from .state import FeatureJob

MAX_PER_CLASS = 128
"""Examples of each class the candidates are rated on."""
MIN_GAIN = 0.1
"""The union must beat the better label alone by this much balanced accuracy."""
MIN_OWN_SHARE = 0.15
"""Each label must rate "1" on at least this share of the active examples the other misses."""


def _examples(job: FeatureJob, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and validation examples, up to `MAX_PER_CLASS` of each class: (ids, active)."""
    ids = [job.example_ids]
    targets = [job.targets]
    if job.validation_ids is not None and job.validation_targets is not None:
        ids.append(job.validation_ids)
        targets.append(job.validation_targets)
    all_ids, active = torch.cat(ids), torch.cat(targets) > 0.5
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in (True, False):
        idx = torch.nonzero(active == cls).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:MAX_PER_CLASS]])
    pick = torch.sort(torch.cat(keep)).values
    return all_ids[pick], active[pick]


def _balanced(pred: torch.Tensor, active: torch.Tensor) -> float:
    tpr = float(pred[active].double().mean())
    tnr = float((~pred[~active]).double().mean())
    return (tpr + tnr) / 2


@torch.no_grad()
def find_union(ctx: StepContext, job: FeatureJob, candidates: list[list[int]],
               config: LabelConfig) -> Polysemantic | None:
    """Two labels of `candidates` whose union explains the feature, or None (docstring)."""
    candidates = [list(c) for c in dict.fromkeys(tuple(c) for c in candidates)]
    ids, active = _examples(job, config.seed)
    if len(candidates) < 2 or not active.any() or active.all():
        return None
    # One pass per candidate: candidates may differ in length (`grow_label`).
    pred = torch.stack([hard_label_margins(ctx, ids, c)[0].cpu() > 0 for c in candidates])
    alone = [_balanced(p, active) for p in pred]
    best: tuple[float, int, int] | None = None
    for a, b in itertools.combinations(range(len(candidates)), 2):
        union = _balanced(pred[a] | pred[b], active)
        own_a = (pred[a] & ~pred[b] & active).sum() / max(1, int((~pred[b] & active).sum()))
        own_b = (pred[b] & ~pred[a] & active).sum() / max(1, int((~pred[a] & active).sum()))
        if (union >= config.success_score and union >= max(alone[a], alone[b]) + MIN_GAIN
                and min(float(own_a), float(own_b)) >= MIN_OWN_SHARE
                and (best is None or union > best[0])):
            best = (union, a, b)
    if best is None:
        return None
    union, a, b = best
    if alone[b] > alone[a]:
        a, b = b, a
    ev = ctx.evaluator
    return Polysemantic(
        labels=[ev.tokenizer.decode(candidates[x]).strip() for x in (a, b)],
        label_token_ids=[candidates[a], candidates[b]],
        balanced_accuracy=[round(alone[a], 6), round(alone[b], 6)],
        union_balanced_accuracy=round(union, 6),
        coverage=[round(float(pred[x][active].double().mean()), 6) for x in (a, b)])
