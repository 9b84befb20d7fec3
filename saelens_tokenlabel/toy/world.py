"""A planted SAE *world* with hundreds of features over the toy evaluator's concepts, for
benchmarking labelers that label many features at once (amortised labeling).

Like `planted` (whose tokenizer, subject model and SAE metadata it reuses), every feature's
firing set is known exactly, so every feature's correct label is known too:

* ``concept`` features fire on a random subset (40-90 %, at least 3 words) of one concept's
  words. Each of the six `CONCEPTS` has several. An "animal" feature holds at least one
  non-mammal and a "number" feature at least one number word; "mammal" and "digit" features
  hold only mammals or only digits. The truth (`WorldFeature.concept`) is always computed from
  the members: the most specific concept containing them all.
* ``noise`` features fire on a random mix of lexicon words, objects included, that no concept
  explains (truth None).
* ``dead`` features never fire (truth None).
* ``liar`` features fire on one concept's words, but their decoder direction points at another,
  unrelated concept: a label guessed from the decoder alone is wrong there.

The subject is a one-layer Llama-shaped HookedTransformer whose token embedding (the SAE's hook,
``blocks.0.hook_resid_pre``) has one dimension per feature: dimension f marks feature f's member
tokens with graded values (1.0 to 1.75) and is zero elsewhere. The SAE reads dimension f
(``relu(2 x_f - 0.5)``, 1.5 to 3.0 on the members, exactly 0 elsewhere). Its decoder rows are
unit vectors clustered by concept as in trained SAEs: ``normalize(c_dir + decoder_noise g)``
with one fixed random direction ``c_dir`` per concept ("mammal" near "animal", "digit" near
"number") and a random unit vector g, so a feature's cosine to its concept's direction is about
0.7, two features of one concept about 0.5, features of unrelated concepts about 0::

    from saelens_tokenlabel.toy.world import build_world
    world = build_world(tmp_dir, liars=4)       # or config=WorldConfig(...)
    world.truth()[17], world.kinds()["dead"]

Everything is deterministic in ``seed``. Importing this module does no I/O; `build_world`
writes the subject tokenizer into the folder it is given, and nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer

from ..records.serial import Config
from .lexicon import ANIMALS, COLORS, CONCEPTS, FOODS, NUMBERS, OBJECTS, SUBSETS
from .planted import (
    HOOK,
    SLOTS,
    planted_metadata,
    single_token,
    subject_model,
    toy_sentences,
    train_subject_tokenizer,
)

WORLD_SLOTS: dict[str, tuple[str, ...]] = {**SLOTS, "number": NUMBERS}
"""The template slots of the world's corpus and tokenizer: numbers are number words and digits,
so every word of `CONCEPTS` (and every object) is one subject token and appears in the text."""
WORLD_NEURONPEDIA_ID = "tiny-subject/0-res-world"
KINDS = ("concept", "noise", "dead", "liar")
"""The feature kinds, in the order `World.kinds` lists them."""
SPARE_DIMS = 8
"""Embedding dimensions beyond one per feature: random, read by no encoder row."""
HIERARCHY_NOISE = 0.7
"""A subset concept's direction is ``normalize(parent + HIERARCHY_NOISE * random unit)``:
cosine about 0.82 to its parent's."""
# Top-level word groups; a noise feature takes at most half its words from any one.
_GROUPS: tuple[tuple[str, ...], ...] = (ANIMALS, NUMBERS, COLORS, FOODS, OBJECTS)
_ALL_WORDS: tuple[str, ...] = tuple(w for g in _GROUPS for w in g)


@dataclass(frozen=True, kw_only=True)
class WorldConfig(Config):
    """How `build_world` plants its features."""

    n_features: int = 240
    """Features of the SAE (``d_sae``); the subject's ``d_model`` is this plus `SPARE_DIMS`."""
    seed: int = 0
    """Seeds everything: the feature plan, the directions, the subject's weights, the corpus."""
    dead: float = 0.05
    """Fraction of features that are dead (rounded)."""
    noise: float = 0.1
    """Fraction of features that are noise (rounded)."""
    liars: int = 0
    """Number of liar features (concept members, another concept's decoder direction)."""
    n_sentences: int = 1200
    """Sentences of the corpus. Templates and slot words are dealt evenly
    (``toy_sentences(balanced=True)``): every word is in at least ``n_sentences // 80``."""
    decoder_noise: float = 1.0
    """Weight of the random unit vector added to a feature's concept direction: cosine about
    ``1/sqrt(1 + decoder_noise**2)`` (0.71) to the concept, ``1/(1 + decoder_noise**2)`` (0.5)
    between two features of one concept."""
    member_fraction: tuple[float, float] = (0.4, 0.9)
    """Range of the fraction of its concept's words a concept or liar feature fires on."""
    noise_words: tuple[int, int] = (6, 14)
    """Range of the number of words a noise feature fires on."""

    def check(self) -> None:
        lo, hi = self.member_fraction
        self.need(0 <= self.dead < 1 and 0 <= self.noise < 1,
                  "dead and noise must be fractions in [0, 1)")
        self.need(self.liars >= 0, "liars must be >= 0")
        self.need(self.n_sentences >= 1, "n_sentences must be >= 1")
        self.need(self.decoder_noise >= 0, "decoder_noise must be >= 0")
        self.need(0 < lo <= hi <= 1, "member_fraction must be 0 < lo <= hi <= 1")
        self.need(2 <= self.noise_words[0] <= self.noise_words[1],
                  "noise_words must be 2 <= lo <= hi")
        self.need(self.n_concept >= len(CONCEPTS), f"n_features={self.n_features} leaves "
                  f"fewer than {len(CONCEPTS)} concept features")

    @property
    def n_dead(self) -> int:
        return round(self.dead * self.n_features)

    @property
    def n_noise(self) -> int:
        return round(self.noise * self.n_features)

    @property
    def n_concept(self) -> int:
        return self.n_features - self.n_dead - self.n_noise - self.liars


@dataclass(frozen=True)
class WorldFeature:
    """One planted feature and its ground truth."""

    index: int
    """Feature index in the SAE."""
    kind: str
    """"concept", "noise", "dead" or "liar" (`KINDS`)."""
    concept: str | None
    """The label a correct labeler gives: the most specific toy concept containing every member
    (`most_specific_concept`). None for noise and dead features."""
    members: tuple[str, ...]
    """The words (lexicon words, each one subject token with its leading space) it fires on,
    in lexicon order; empty for dead features."""
    decoder_concept: str | None
    """The concept its decoder direction points at: `concept`, except for liars (an unrelated
    concept); None for noise and dead features (random directions)."""


@dataclass(frozen=True, eq=False)
class World:
    """A built world: run `sae` on `subject` over `corpus` and each feature fires exactly on its
    members' tokens."""

    subject: HookedTransformer
    """One-layer Llama-shaped subject; its embedding is the SAE's input."""
    sae: StandardSAE
    """``d_in = n_features + SPARE_DIMS``, ``d_sae = n_features``, hook `HOOK`."""
    corpus: tuple[str, ...]
    """Short template sentences holding every member word several times."""
    features: tuple[WorldFeature, ...]
    """``features[i].index == i``."""
    tokenizer: Any
    """The subject's tokenizer (saved in `build_world`'s folder)."""
    directions: dict[str, torch.Tensor] = field(default_factory=dict)
    """Concept -> the unit direction its features' decoder rows cluster around."""

    def truth(self) -> dict[int, str | None]:
        """Feature index -> its correct label (None: noise or dead)."""
        return {f.index: f.concept for f in self.features}

    def kinds(self) -> dict[str, list[int]]:
        """Kind -> the indices of its features, every kind of `KINDS` present."""
        out: dict[str, list[int]] = {k: [] for k in KINDS}
        for f in self.features:
            out[f.kind].append(f.index)
        return out


def most_specific_concept(words: Sequence[str]) -> str | None:
    """The smallest concept of `CONCEPTS` containing every word, None if none does."""
    fits = [c for c, members in CONCEPTS.items() if words and set(words) <= set(members)]
    return min(fits, key=lambda c: len(CONCEPTS[c]), default=None)


def _concept_members(rng: random.Random, concept: str,
                     fraction: tuple[float, float]) -> tuple[str, ...]:
    """A random subset of the concept's words whose most specific concept is `concept`."""
    words = CONCEPTS[concept]
    while True:
        k = min(len(words), max(3, round(rng.uniform(*fraction) * len(words))))
        chosen = set(rng.sample(words, k))
        if most_specific_concept(tuple(chosen)) == concept:
            return tuple(w for w in words if w in chosen)


def _noise_members(rng: random.Random, sizes: tuple[int, int]) -> tuple[str, ...]:
    """Random lexicon words, at least one object, at most half from any one word group."""
    while True:
        chosen = set(rng.sample(_ALL_WORDS, rng.randint(*sizes)))
        if (chosen & set(OBJECTS) and
                max(len(chosen & set(g)) for g in _GROUPS) <= len(chosen) / 2):
            return tuple(w for w in _ALL_WORDS if w in chosen)


def _unrelated(concept: str) -> list[str]:
    """Concepts that are neither `concept` nor its parent nor its child."""
    related = {concept, SUBSETS.get(concept)} | {c for c, p in SUBSETS.items() if p == concept}
    return [c for c in CONCEPTS if c not in related]


def plan_features(config: WorldConfig) -> tuple[WorldFeature, ...]:
    """The features' kinds, members and truths. Kinds are shuffled over the indices; concept
    and liar features cycle through the concepts in turn."""
    rng = random.Random(config.seed)
    kinds = (["dead"] * config.n_dead + ["noise"] * config.n_noise + ["liar"] * config.liars +
             ["concept"] * config.n_concept)
    rng.shuffle(kinds)
    concepts = list(CONCEPTS)
    turn = {"concept": 0, "liar": 0}
    out = []
    for index, kind in enumerate(kinds):
        if kind == "dead":
            out.append(WorldFeature(index, kind, None, (), None))
            continue
        if kind == "noise":
            out.append(WorldFeature(index, kind, None,
                                    _noise_members(rng, config.noise_words), None))
            continue
        concept = concepts[turn[kind] % len(concepts)]
        turn[kind] += 1
        members = _concept_members(rng, concept, config.member_fraction)
        decoder = concept if kind == "concept" else rng.choice(_unrelated(concept))
        out.append(WorldFeature(index, kind, concept, members, decoder))
    return tuple(out)


def _unit(x: Float[torch.Tensor, "*b d"]) -> Float[torch.Tensor, "*b d"]:
    return x / x.norm(dim=-1, keepdim=True)


def concept_directions(d_model: int, gen: torch.Generator) -> dict[str, Float[torch.Tensor,
                                                                            " d_model"]]:
    """One random unit direction per concept; a subset's lies near its parent's."""
    out: dict[str, torch.Tensor] = {}
    for concept in sorted(CONCEPTS, key=lambda c: c in SUBSETS):  # parents first
        r = _unit(torch.randn(d_model, generator=gen))
        parent = SUBSETS.get(concept)
        out[concept] = r if parent is None else _unit(out[parent] + HIERARCHY_NOISE * r)
    return {c: out[c] for c in CONCEPTS}


def decoder_rows(features: Sequence[WorldFeature], directions: dict[str, torch.Tensor],
                 decoder_noise: float, gen: torch.Generator
                 ) -> Float[torch.Tensor, "d_sae d_model"]:
    """Unit decoder rows: ``normalize(c_dir + decoder_noise g)`` for a feature whose decoder
    points at a concept, a random unit vector g for the others."""
    d_model = next(iter(directions.values())).shape[0]
    g = _unit(torch.randn(len(features), d_model, generator=gen))
    rows = g.clone()
    for f in features:
        if f.decoder_concept is not None:
            rows[f.index] = _unit(directions[f.decoder_concept] + decoder_noise * g[f.index])
    return rows


def world_sae(features: Sequence[WorldFeature],
              W_dec: Float[torch.Tensor, "d_sae d_model"]) -> StandardSAE:
    """Feature f reads embedding dimension f: ``relu(2 x_f - 0.5)``; a dead one has no members
    and bias -1. The decoder is `W_dec`."""
    d_sae, d_model = W_dec.shape
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, metadata=planted_metadata(
        HOOK, neuronpedia_id=WORLD_NEURONPEDIA_ID)))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        for f in features:
            if f.members:
                sae.W_enc[f.index, f.index] = 2.0
            sae.b_enc[f.index] = -0.5 if f.members else -1.0
        sae.W_dec.copy_(W_dec)
    return sae


def build_world(directory: Path, config: WorldConfig | None = None, **changes: Any) -> World:
    """Plant a world (`WorldConfig`; keyword arguments override its fields, e.g.
    ``build_world(d, liars=4)``). Writes the subject tokenizer into `directory`."""
    config = replace(config or WorldConfig(), **changes)
    features = plan_features(config)
    tokenizer = train_subject_tokenizer(Path(directory), slots=WORLD_SLOTS)
    marks = {f.index: [single_token(tokenizer, f" {w}") for w in f.members] for f in features}
    d_model = config.n_features + SPARE_DIMS
    subject = subject_model(tokenizer, n_layers=1, seed=config.seed, d_model=d_model,
                            marks=marks)
    gen = torch.Generator().manual_seed(config.seed)
    directions = concept_directions(d_model, gen)
    sae = world_sae(features, decoder_rows(features, directions, config.decoder_noise, gen))
    corpus = toy_sentences(config.n_sentences, seed=config.seed, slots=WORLD_SLOTS,
                           balanced=True)
    return World(subject=subject, sae=sae, corpus=tuple(corpus), features=features,
                 tokenizer=tokenizer, directions=directions)
