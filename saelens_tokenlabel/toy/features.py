"""Planted features of the toy world: per-token activations that fire on a concept's members.

The data is generated from the lexicon (no files): each lexicon word and each object word
appears in a short sentence, and the feature is 1.0 on exactly the members of the chosen
concept, 0.0 elsewhere. With the toy evaluator, the best label is then known: the concept's
own label (one token for `CONCEPTS`, two for `TWO_TOKEN_CONCEPTS`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lexicon import CONCEPTS, OBJECTS, TWO_TOKEN_CONCEPTS

if TYPE_CHECKING:
    from ..data import FeatureData
    from ..evaluator import Evaluator

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
    from ..data import FeatureData

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


def label_token_ids(evaluator: Evaluator, concept: str) -> list[int]:
    """The evaluator's token ids of a concept's label, as the label slots hold them (no space
    before: the prompt writes ``concept "LABEL"``). Two ids for a two-token concept."""
    if concept not in all_concepts():
        raise KeyError(f"No toy concept {concept!r}; choose one of {', '.join(all_concepts())}.")
    return list(evaluator.tokenizer(concept, add_special_tokens=False)["input_ids"])
