"""Training, validation and held-out splits: by context, stratified by class and rare words."""

from __future__ import annotations

from collections import Counter

import pytest

from saelens_tokenlabel import FeatureData
from saelens_tokenlabel.records.splits import split_examples


def _where(split) -> dict[int, str]:
    return {i: name for name in ("train", "validation", "heldout")
            for i in getattr(split, name)}


def test_every_example_lands_once_and_a_context_never_straddles_splits():
    # 60 contexts of 5 examples each; one active example per context in a third of them.
    groups = [g for g in range(60) for _ in range(5)]
    words = [f"w{(g * 7 + k) % 40}" for g in range(60) for k in range(5)]
    active = [g % 3 == 0 and k == 0 for g in range(60) for k in range(5)]
    split = split_examples(groups, words, active, 0.2, 0.2, seed=0)
    where = _where(split)
    assert sorted(where) == list(range(300))
    for g in range(60):
        assert len({where[i] for i in range(5 * g, 5 * g + 5)}) == 1, g
    # Per class, groups go by quota: 20 active contexts -> 12/4/4, 40 inactive -> 24/8/8.
    for cls, want in ((True, (12, 4, 4)), (False, (24, 8, 8))):
        got = Counter(where[5 * g] for g in range(60) if (g % 3 == 0) == cls)
        assert (got["train"], got["validation"], got["heldout"]) == want
    assert split == split_examples(groups, words, active, 0.2, 0.2, seed=0)
    assert split != split_examples(groups, words, active, 0.2, 0.2, seed=1)


@pytest.mark.parametrize("seed", range(5))
def test_a_rare_word_type_reaches_every_split_when_there_are_three(seed):
    # 100 one-example contexts of common words, and three of a rare word ("frog"): one in
    # each split, whatever the seed (a split by quota alone would leave it out of one or two
    # splits most of the time).
    words = ["cat", "box", "cup", "red"] * 25 + ["frog"] * 3
    active = [w == "cat" for w in words]
    split = split_examples(list(range(len(words))), words, active, 0.2, 0.2, seed)
    where = _where(split)
    frogs = [where[i] for i, w in enumerate(words) if w == "frog"]
    assert sorted(frogs) == ["heldout", "train", "validation"]


def test_tiny_classes_keep_one_for_training_then_held_out_then_validation():
    words = ["a", "b", "c", "d", "e", "f"]
    for n_active, want in ((1, ("train",)), (2, ("heldout", "train")),
                           (3, ("heldout", "train", "validation"))):
        active = [i < n_active for i in range(6)]
        where = _where(split_examples(list(range(6)), words, active, 0.2, 0.2, seed=0))
        assert tuple(sorted(where[i] for i in range(n_active))) == want


def test_no_validation_or_holdout_trains_on_everything():
    split = split_examples([0, 1, 2, 3], list("abcd"), [True, False, True, False], 0.0, 0.0, 0)
    assert split.train == [0, 1, 2, 3] and not split.validation and not split.heldout


def test_sae_examples_of_one_context_share_a_split():
    # Rated examples with their corpus context: an active word and its near-misses come from
    # one context (their windows differ) and must land in the same split.
    rated = []
    for c in range(30):
        rated.append((f"ctx {c} the cat", "cat", 1.0, c))
        rated += [(f"ctx {c} the", "the", 0.0, c), (f"{c} the cat sat", "sat", 0.0, c)]
    rated += [(f"random {r}", "box", 0.0, 100 + r) for r in range(30)]
    ex = FeatureData.from_examples(rated).examples()
    assert [e.group for e in ex.items[:3]] == [0, 0, 0]
    split = split_examples([e.group for e in ex.items], [e.word for e in ex.items],
                           [e.active for e in ex.items], 0.2, 0.2, seed=0)
    where = _where(split)
    for c in range(30):
        assert where[3 * c] == where[3 * c + 1] == where[3 * c + 2]
    # Triples without a context are grouped by their text.
    plain = FeatureData.from_examples([("t", "a", 1.0), ("t", "b", 0.0)]).examples()
    assert [e.group for e in plain.items] == ["t", "t"]


@pytest.mark.parametrize("seed", range(6))
def test_training_sees_both_classes_when_every_context_holds_an_active_word(seed):
    # Every inactive example shares its context with an active one, so the groups are all
    # "active" groups: training must still get an inactive example.
    groups, words, active = [0, 0, 1], ["the", "cat", "dog"], [False, True, True]
    split = split_examples(groups, words, active, 0.2, 0.2, seed)
    assert {active[i] for i in split.train} == {True, False}
