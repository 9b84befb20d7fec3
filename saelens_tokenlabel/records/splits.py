"""Training, validation and held-out splits of a feature's examples.

Three splits, three jobs: the optimisation sees only the training examples; the validation
examples choose between attempts (restarts, refinements); the held-out examples score the
label that was chosen, and nothing else, so the reported score carries no selection bias.

Examples are split by *group*, never one by one: a group is the context an example comes from
(a sentence, or an SAE context window), so an active word and the near-misses around it land on
the same side. Groups are split per class (groups holding an active example, and the rest), and
within a class by their rarest word type: groups whose rarest word is the same are spread over
the splits, one to each split first when there are at least three, so that a rare word type
(the one sibling that tells "mammal" from "animal") reaches every split when there are enough of
it. Everything else goes by quota, in proportion to the fractions.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

SPLITS = ("train", "validation", "heldout")


@dataclass(frozen=True)
class Split:
    """Indices of the examples in each split, ascending."""

    train: list[int]
    validation: list[int]
    heldout: list[int]


def _quotas(n: int, validation: float, holdout: float) -> list[int]:
    """Groups of one class per split: training keeps at least one; with two or more, the
    held-out split gets one (so held-out scores are defined); with three or more, validation
    gets one too (when asked for)."""
    held = round(holdout * n)
    val = round(validation * n)
    if holdout > 0 and n >= 2:
        held = max(held, 1)
    if validation > 0 and n >= 3:
        val = max(val, 1)
    while held + val > n - 1 and val > 0:
        val -= 1
    held = min(held, n - 1 - val) if n else 0
    return [n - held - val, val, max(0, held)]


def _assign(buckets: list[list[int]], quota: list[int]) -> list[int]:
    """Split of each group (by position in the flattened buckets' order)."""
    left = list(quota)
    out: dict[int, int] = {}

    def pick() -> int:
        # The split furthest below its quota (ties: train, validation, held-out).
        open_ = [s for s in range(3) if left[s] > 0]
        return max(open_, key=lambda s: (left[s] / quota[s], -s))

    for bucket in buckets:
        rest = list(bucket)
        if len(bucket) >= len(SPLITS):
            # A word type with enough groups reaches every split that has room.
            for s in range(3):
                if left[s] > 0 and rest:
                    out[rest.pop(0)] = s
                    left[s] -= 1
        for g in rest:
            s = pick()
            out[g] = s
            left[s] -= 1
    return [out[g] for g in sorted(out)]


def split_examples(groups: Sequence[Hashable], words: Sequence[str], active: Sequence[bool],
                   validation: float, holdout: float, seed: int) -> Split:
    """Split examples (given by their group, word and class) into training, validation and
    held-out examples (module docstring). Deterministic for a seed."""
    rng = random.Random(seed)
    order = list(dict.fromkeys(groups))
    gid = {g: i for i, g in enumerate(order)}
    members: list[list[int]] = [[] for _ in order]
    for i, g in enumerate(groups):
        members[gid[g]].append(i)
    word_groups = Counter(w for ws in ({words[i].lower() for i in m} for m in members)
                          for w in ws)
    split_of = [0] * len(order)
    for cls in (True, False):
        these = [g for g, m in enumerate(members) if any(active[i] for i in m) == cls]
        by_key: dict[str, list[int]] = defaultdict(list)
        for g in these:
            key = min((word_groups[words[i].lower()], words[i].lower()) for i in members[g])[1]
            by_key[key].append(g)
        keys = sorted(by_key)
        rng.shuffle(keys)
        keys.sort(key=lambda k: len(by_key[k]))  # rarest first, random among equals
        for k in keys:
            rng.shuffle(by_key[k])
        flat = [g for k in keys for g in by_key[k]]
        positions, start = [], 0
        for k in keys:
            positions.append(list(range(start, start + len(by_key[k]))))
            start += len(by_key[k])
        where = _assign(positions, _quotas(len(these), validation, holdout))
        for g, s in zip(flat, where, strict=True):
            split_of[g] = s
    _train_sees_both_classes(split_of, members, active)
    out: list[list[int]] = [[], [], []]
    for g, m in enumerate(members):
        out[split_of[g]].extend(m)
    return Split(*(sorted(x) for x in out))


def _train_sees_both_classes(split_of: list[int], members: list[list[int]],
                             active: Sequence[bool]) -> None:
    """Groups are split by whether they hold an active example, so when every inactive
    example shares a context with an active one, training could see no inactive example at
    all: move the smallest group that has the missing class into training."""
    for cls in (True, False):
        has = [g for g, m in enumerate(members) if any(active[i] == cls for i in m)]
        if has and not any(split_of[g] == 0 for g in has):
            split_of[min(has, key=lambda g: (len(members[g]), g))] = 0
