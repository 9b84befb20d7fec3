from __future__ import annotations

import math
import random

import pytest

from saelens_tokenlabel import FeatureData, FeatureDataError, LabelConfig
from saelens_tokenlabel.records.data import SYNTHETIC_NAMES
from saelens_tokenlabel.toy.lexicon import ANIMALS, MAMMALS, NON_MAMMAL_ANIMALS, NUMBERS


def test_from_sentences_keeps_leading_spaces_in_token_text():
    d = FeatureData.from_sentences([[("The", 0.0), (" cat", 1.0), (" sat", 0.0)]])
    ex = d.examples()
    assert [e.word for e in ex.items] == ["The", "cat", "sat"]
    assert all(e.sentence == "The cat sat" for e in ex.items)
    assert [e.active for e in ex.items] == [False, True, False]
    raw = d.examples(strip_word=False)
    assert raw.items[1].word == " cat"


def test_threshold_fraction_and_absolute():
    d = FeatureData.from_sentences([[("a", 0.0), (" b", 2.0), (" c", 10.0), (" d", 6.0)]])
    ex = d.examples(fraction=0.5)
    assert ex.threshold == 5.0 and [e.active for e in ex.items] == [False, False, True, True]
    assert "max" in ex.threshold_rule
    ex = d.examples(threshold=1.0)
    assert [e.active for e in ex.items] == [False, True, True, True]
    assert "absolute" in ex.threshold_rule
    # The default: active iff the feature fires.
    ex = d.examples()
    assert ex.threshold == 0.0 and [e.active for e in ex.items] == [False, True, True, True]
    assert ex.threshold_rule.startswith("activation > 0 ")


def test_default_rule_keeps_every_weakly_firing_member_active():
    # Heavy-tailed activations on a concept's members (exponential, as SAE activations
    # are): under LabelConfig()'s rule no member instance is a negative. A cut at half the
    # max (the old default) makes most of them negatives.
    rng = random.Random(0)
    members = {"cat", "dog", "fox", "cow"}
    sents = [[("The", 0.0), (" " + w, rng.expovariate(1.0) if w in members else 0.0),
              (" ran", 0.0)] for w in sorted(members | {"box", "cup", "pen"}) * 12]
    d = FeatureData.from_sentences(sents)
    config = LabelConfig()
    ex = d.examples(config.threshold, config.threshold_fraction)
    assert all(e.active == (e.word in members) for e in ex.items)
    old = d.examples(fraction=0.5)
    assert sum(e.word in members and not e.active for e in old.items) > 24


@pytest.mark.parametrize("bad, match", [
    ([], "no sentences"),
    ([[]], "empty"),
    ([[("a", "high")]], "not a number"),
    ([[("a", math.nan)]], "NaN"),
    ([[("a", math.inf)]], "inf"),
    ([[(1, 0.0)]], "must be a str"),
    ([["abc"]], "pair"),
])
def test_bad_sentences_are_clear_errors(bad, match):
    with pytest.raises(FeatureDataError, match=match):
        FeatureData.from_sentences(bad)


def test_unlabelable_features_are_clear_errors():
    dead = FeatureData.from_sentences([[("a", 0.0), (" b", 0.0)]])
    with pytest.raises(FeatureDataError, match="no active examples"):
        dead.check_labelable(dead.examples())
    always = FeatureData.from_sentences([[("a", 1.0), (" b", 1.0)]])
    with pytest.raises(FeatureDataError, match="active on every example"):
        always.check_labelable(always.examples())
    blank = FeatureData.from_sentences([[(" ", 1.0), ("  ", 0.0)]])
    with pytest.raises(FeatureDataError, match="no examples"):
        blank.check_labelable(blank.examples())


def test_marked_text():
    d = FeatureData.from_marked_text(["The **cat** chased the **mouse**.", "**他一到**，我"])
    assert d.sentences[0] == [("The", 0.0), (" cat", 1.0), (" chased", 0.0), (" the", 0.0),
                              (" mouse", 1.0), (".", 0.0)]
    assert d.sentences[1] == [("他", 1.0), ("一", 1.0), ("到", 1.0), ("，", 0.0), ("我", 0.0)]
    with pytest.raises(FeatureDataError, match="Unclosed"):
        FeatureData.from_marked_text(["a **b"])


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_datasets_ship_and_are_labelable(name):
    d = FeatureData.synthetic(name)
    ex = d.examples()
    d.check_labelable(ex)
    assert d.metadata["source"].startswith("Schulz & Fallows")
    assert 250 <= sum(len(s) for s in d.sentences) <= 800  # "a few hundred tokens"
    active_words = {e.word.lower() for e in ex.items if e.active}
    inactive_words = {e.word.lower() for e in ex.items if not e.active}
    if name == "animals":
        assert active_words <= set(ANIMALS) and not (inactive_words & set(ANIMALS))
    if name in ("mammals", "mammal_text"):
        assert active_words <= set(MAMMALS)
        assert inactive_words & set(NON_MAMMAL_ANIMALS)  # the distinguishing negatives
    if name == "numbers":
        assert active_words <= set(NUMBERS)
    if name == "chinese":
        assert all("\u4e00" <= e.word <= "\u9fff" for e in ex.items if e.active)
    if name == "palindromes":
        assert all(w == w[::-1] for w in active_words)


def test_synthetic_starts_with_paper_samples():
    d = FeatureData.synthetic("animals")
    first = d.sentences[0]
    assert "".join(t for t, _ in first) == "The cat chased the mouse."
    assert [t.strip() for t, a in first if a > 0] == ["cat", "mouse"]
    m = FeatureData.synthetic("mammal_text")
    third = "".join(t for t, _ in m.sentences[2])
    assert third == "The bird sang a sweet song." and all(a == 0 for _, a in m.sentences[2])


def test_unknown_synthetic_name():
    with pytest.raises(KeyError, match="animals"):
        FeatureData.synthetic("cats")


@pytest.mark.parametrize("build, named", [
    (lambda: FeatureData([[("The", 0.0), (" cat", math.nan)]], name=7),
     "Sentence 0, token 1 (' cat'): activation is nan"),
    (lambda: FeatureData([[("a", 1.0)], [("b", math.inf)]]),
     "Sentence 1, token 0 ('b'): activation is inf"),
    (lambda: FeatureData([], rated=[("the cat", "cat", 1.0), ("a dog", "dog", math.nan)]),
     "Example 1 ('dog'): activation is nan"),
    (lambda: FeatureData([[("a", "high")]]), "activation 'high' is not a number"),
    (lambda: FeatureData([], rated=[("t", "w", 1.0)], groups=[0, 1]),
     "2 groups for 1 rated examples"),
])
def test_feature_data_built_directly_is_checked_as_by_its_constructors(build, named):
    # Built directly (not through from_*), a NaN used to count as inactive, and the result
    # said status='ok'. Now it is the from_* constructors' one-line error.
    with pytest.raises(FeatureDataError) as err:
        build()
    assert named in str(err.value) and "\n" not in str(err.value)


def test_feature_data_built_directly_keeps_what_the_constructors_build():
    sents = [[("The", 0), (" cat", 1.5)]]
    assert FeatureData(sents).sentences == FeatureData.from_sentences(sents).sentences == \
        [[("The", 0.0), (" cat", 1.5)]]
    rated = [("the cat", "cat", 1), ("a dog", "dog", 0.0, "ctx")]
    built = FeatureData.from_examples(rated)
    assert built.rated == [("the cat", "cat", 1.0), ("a dog", "dog", 0.0)]
    assert built.groups == ["the cat", "ctx"]
