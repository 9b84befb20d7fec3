"""Planted features of the toy world: per-token activations that fire on a concept's members.

The data is generated from the lexicon (no files): each lexicon word and each object word
appears in a short sentence, and the feature is 1.0 on exactly the members of the chosen
concept, 0.0 elsewhere. With the toy evaluator, the best label is then known: the concept's
own label (one token for `CONCEPTS`, two for `TWO_TOKEN_CONCEPTS`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .lexicon import CONCEPTS, OBJECTS, SUBSETS, TWO_TOKEN_CONCEPTS

if TYPE_CHECKING:
    from ..evaluator.model import Evaluator
    from ..records.data import FeatureData

TEMPLATES = ("The {w} was here.", "I saw the {w} today.", "A {w} and a {o} stood there.")
"""Sentence frames; ``{w}`` is the word asked about, ``{o}`` an object word (never active)."""


def all_concepts() -> dict[str, tuple[str, ...]]:
    """Every concept of the toy world, single-token and two-token, label -> members."""
    return {**CONCEPTS, **TWO_TOKEN_CONCEPTS}


def concept_feature(concept: str) -> FeatureData:
    """Toy-world sentences; the feature fires (1.0) on exactly the member words of `concept`.

    Every word of every concept, and every object word, is shown once, so the inactive
    examples hold the members of the other concepts (hard negatives) and plain objects.
    """
    from ..records.data import FeatureData

    concepts = all_concepts()
    if concept not in concepts:
        raise KeyError(f"No toy concept {concept!r}; choose one of {', '.join(concepts)}.")
    members = set(concepts[concept])
    words = sorted({w for ws in concepts.values() for w in ws} | set(OBJECTS))
    sentences = []
    for i, w in enumerate(words):
        text = TEMPLATES[i % len(TEMPLATES)].format(w=w, o=OBJECTS[i % len(OBJECTS)])
        # whitespace-led word tokens, the full stop on its own
        pieces = text.replace(".", " .").split(" ")
        sentences.append([(p if j == 0 or p == "." else " " + p, 1.0 if p in members else 0.0)
                          for j, p in enumerate(pieces)])
    return FeatureData.from_sentences(sentences, name=concept)


def noisy_feature(concept: str, keep: float = 0.8, noise: float = 0.02, seed: int = 0
                  ) -> FeatureData:
    """`concept_feature(concept)` firing on about a `keep` share of the members' instances and
    a `noise` share of every other word: a feature one concept explains, up to noise no label
    fixes."""
    from ..records.data import FeatureData

    rng = random.Random(seed)
    sents = [[(t, (1.0 if rng.random() < keep else 0.0) if a > 0 else
               (1.0 if t.strip() and rng.random() < noise else 0.0)) for t, a in s]
             for s in concept_feature(concept).sentences]
    return FeatureData.from_sentences(sents, name=f"noisy-{concept}")


def union_feature(first: str, second: str) -> FeatureData:
    """Toy-world sentences; the feature fires on the members of either of two concepts: a
    polysemantic feature, which no single concept label explains."""
    from ..records.data import FeatureData

    concepts = all_concepts()
    members = set(concepts[first]) | set(concepts[second])
    sents = [[(t, 1.0 if t.strip() in members else 0.0) for t, _ in s]
             for s in concept_feature(first).sentences]
    return FeatureData.from_sentences(sents, name=f"{first}|{second}")


SUBSET_TEMPLATES = ("A {w} saw a {o}.", "A {w} and a {o}.")
"""Sentence frames of `subset_feature`."""


def _sentence(word: str, template: str, other: str, active: bool) -> list[tuple[str, float]]:
    text = template.format(w=word, o=other)
    pieces = text.replace(".", " .").split(" ")
    return [(p if j == 0 or p == "." else " " + p, 1.0 if p == word and active else 0.0)
            for j, p in enumerate(pieces)]


def subset_feature(subset: str, n_siblings: int = 5, seed: int = 0) -> FeatureData:
    """The paper's hierarchy failure (§3.2, Fig. 4a) in the toy world: a feature that fires on
    the members of a subset concept (`SUBSETS`: "mammal" ⊂ "animal", "digit" ⊂ "number"), in
    text where the parent's other members (the siblings) are rare.

    Each subset member appears twice, every word of the concepts disjoint from the parent once,
    and `n_siblings` distinct siblings once each (5: about 1 word in 100), each word in a short
    sentence with an object word. Only the siblings tell the subset's label from the parent's.
    """
    from ..records.data import FeatureData

    if subset not in SUBSETS:
        raise KeyError(f"No subset concept {subset!r}; choose one of {', '.join(SUBSETS)}.")
    rng = random.Random(seed)
    members, parent = CONCEPTS[subset], set(CONCEPTS[SUBSETS[subset]])
    siblings = sorted(parent - set(members))
    rng.shuffle(siblings)
    if n_siblings > len(siblings):
        raise ValueError(f"{subset!r} has {len(siblings)} siblings; n_siblings={n_siblings}.")
    others = sorted({w for ws in all_concepts().values() for w in ws} - parent)
    n = len(SUBSET_TEMPLATES)
    sents = [_sentence(m, SUBSET_TEMPLATES[(i + k) % n], rng.choice(OBJECTS), True)
             for i, m in enumerate(members) for k in range(2)]
    sents += [_sentence(w, SUBSET_TEMPLATES[i % n], rng.choice(OBJECTS), False)
              for i, w in enumerate(others + list(OBJECTS))]
    sents += [_sentence(w, SUBSET_TEMPLATES[0], rng.choice(OBJECTS), False)
              for w in siblings[:n_siblings]]
    rng.shuffle(sents)
    return FeatureData.from_sentences(sents, name=f"{subset}-only")


def label_token_ids(evaluator: Evaluator, concept: str) -> list[int]:
    """The evaluator's token ids of a concept's label, as the label slots hold them (no space
    before: the prompt writes ``concept "LABEL"``). Two ids for a two-token concept."""
    if concept not in all_concepts():
        raise KeyError(f"No toy concept {concept!r}; choose one of {', '.join(all_concepts())}.")
    return list(evaluator.tokenizer(concept, add_special_tokens=False)["input_ids"])
