"""A planted world that scales: a 131k-feature SAE on a fixed, tiny subject, for measuring how
a run's cost grows with the SAE (``bench/bench_scale.py``).

`toy.world` gives every feature an embedding dimension of its own, so its subject grows with
the SAE and every feature fires on its words wherever they stand: at 16k features each word
token would fire about a thousand of them. Real SAEs keep their L0 (features per token) in the
tens whatever their width, each feature firing on a small share of the tokens. Here the
subject stays the same for any number of features, and a feature fires on its member words
only at one position of the context:

* the subject's residual stream at the SAE's hook (``blocks.0.hook_resid_pre`` of a one-layer
  model with learned positions, so the embedding plus the position's) is one-hot: one
  dimension per lexicon word (`WORDS`), one per position, a few spare ones;
* feature f reads its member words' dimensions (weights 2.0 to 3.5, graded by member as in
  `toy.world`) and its two positions' (4.0 each), with bias -4.5: it fires (1.5 to 3.0, as
  in `toy.world`) exactly on a member word at one of its positions, never on a member
  elsewhere or on another word there;
* the corpus is documents of short sentences, one in three holding one lexicon word (dealt
  evenly), the others none (`FILLERS`): every word stands at every position about equally
  often, and about one token in fifteen is a lexicon word, so the random and near-miss
  examples of a feature seldom hold its own words.

The plan (concept, noise, dead and liar features, their members and truths) and the decoder
rows (clustered by concept, liars pointing at another concept) are `toy.world`'s
(`plan_features`, `decoder_rows`), so `World.truth()` and `World.kinds()` read the same. The
truth of a feature is its members' concept; its inactive examples include its members at other
positions now and then (the same word, on and off), as a real feature's do.

A feature fires on about ``n_tokens * 0.066 * 2/31 * (its members / 117)`` tokens (300 for a
ten-word feature at 500k tokens) and L0 is about ``n_features / 3,600`` per token (4.5 at 16k
features, 36 at 131k).

Everything is deterministic in ``seed``. Importing this module does no I/O; `build_scale_world`
writes the subject tokenizer into the folder it is given, and nothing else.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ..records.serial import Config
from .lexicon import CONCEPTS, OBJECTS
from .planted import HOOK, MODEL_NAME, dealer, planted_metadata, single_token
from .planted import train_subject_tokenizer as _train_tokenizer
from .world import (
    SPARE_DIMS,
    WORLD_NEURONPEDIA_ID,
    WORLD_SLOTS,
    World,
    WorldConfig,
    WorldFeature,
    concept_directions,
    decoder_rows,
    plan_features,
)

WORDS: tuple[str, ...] = tuple(dict.fromkeys(
    [w for members in CONCEPTS.values() for w in members] + list(OBJECTS)))
"""The lexicon words of the corpus (every concept's and the objects), each one subject
token with its leading space."""
SENTENCES = ("I saw the {w}.", "I bought a {w}.", "The {w} slept.", "A {w} stopped by.",
             "I ate near the {w}.", "The {w} was near.", "I chased the {w}.")
"""Short sentences around one lexicon word, of words that are one subject token each and that
the toy evaluator rates outside every concept (not "She", "My", "There" or "it": it calls
those animals)."""
FILLERS = ("I slept.", "I ate.", "I stopped by.", "I slept under a.", "I saw.", "I bought.",
           "I chased.")
"""Sentences without a lexicon word, of the same words."""
WORD_WEIGHT, POSITION_WEIGHT, BIAS = 2.0, 4.0, -4.5
"""Encoder weights and bias: a member at one of the feature's positions gives 2 g + 4 - 4.5
(1.5 to 3.0 for g = 1.0 to 1.75), a member elsewhere 2 g - 4.5 < 0, another word at the
position -0.5."""
POSITIONS_PER_FEATURE = 2
"""Positions a feature fires at (of ``context_size - 1``)."""


@dataclass(frozen=True, kw_only=True)
class ScaleConfig(Config):
    """How `build_scale_world` plants its features and writes its corpus."""

    n_features: int = 1024
    """Features of the SAE (``d_sae``); the subject does not grow with it."""
    n_tokens: int = 500_000
    """Corpus tokens (subject tokens, BOS not counted): at least this many, less than one
    document more."""
    seed: int = 0
    """Seeds the plan, the directions, the positions and the corpus."""
    dead: float = 0.05
    """Fraction of dead features."""
    noise: float = 0.1
    """Fraction of noise features."""
    liar_fraction: float = 0.03
    """Fraction of liar features (members of one concept, the decoder of another)."""
    context_size: int = 32
    """Tokens per context (BOS included); a feature's positions are among 1 .. this - 1."""
    document_tokens: int = 24
    """A document holds sentences until it has about this many tokens (one context)."""

    def check(self) -> None:
        self.need(self.n_features >= 16, f"n_features must be >= 16, got {self.n_features}")
        self.need(self.n_tokens >= 1, f"n_tokens must be >= 1, got {self.n_tokens}")
        self.need(0 <= self.liar_fraction < 1, "liar_fraction must be in [0, 1)")
        self.need(2 <= self.document_tokens < self.context_size,
                  "need 2 <= document_tokens < context_size")

    def world_config(self) -> WorldConfig:
        """The plan's settings (`toy.world.plan_features`)."""
        return WorldConfig(n_features=self.n_features, seed=self.seed, dead=self.dead,
                           noise=self.noise,
                           liars=round(self.liar_fraction * self.n_features))


def feature_positions(config: ScaleConfig) -> list[tuple[int, ...]]:
    """Each feature's `POSITIONS_PER_FEATURE` positions in the context (1 .. context_size -
    1), dealt evenly."""
    deal = dealer(random.Random(config.seed + 1))
    positions = range(1, config.context_size)
    out = []
    for _ in range(config.n_features):
        picked: set[int] = set()
        while len(picked) < POSITIONS_PER_FEATURE:
            picked.add(int(deal(positions)))
        out.append(tuple(sorted(picked)))
    return out


def scale_documents(config: ScaleConfig, tokenizer: Any) -> list[str]:
    """Documents of sentences, one in three of `SENTENCES` around a lexicon word (dealt
    evenly), the others `FILLERS`; about `document_tokens` tokens each, at least `n_tokens`
    in all (the last document ends the count)."""
    deal = dealer(random.Random(config.seed + 2))
    lengths = {t: len(tokenizer(" " + t.format(w="cat"), add_special_tokens=False)[
        "input_ids"]) for t in SENTENCES + FILLERS}  # every lexicon word is one token
    docs, total, k = [], 0, 0
    while total < config.n_tokens:
        parts, n = [], 0
        while n < config.document_tokens:
            t = deal(SENTENCES) if k % 3 == 0 else deal(FILLERS)
            k += 1
            parts.append(t.format(w=deal(WORDS)) if "{w}" in t else t)
            n += lengths[t]
        docs.append(" ".join(parts))
        total += len(tokenizer(docs[-1], add_special_tokens=False)["input_ids"])
    return docs


def scale_subject(tokenizer: Any, config: ScaleConfig) -> HookedTransformer:
    """One layer with learned positions; the embedding and the position are one-hot at the
    hook (module docstring)."""
    d_model = len(WORDS) + config.context_size + SPARE_DIMS
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=d_model, d_head=8, n_heads=2, d_mlp=16, n_ctx=config.context_size,
        d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS",
        positional_embedding_type="standard", default_prepend_bos=False,
        dtype=torch.float32, seed=config.seed, model_name=MODEL_NAME)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    with torch.no_grad():
        model.W_E.zero_()
        model.W_pos.zero_()
        for i, w in enumerate(WORDS):
            model.W_E[single_token(tokenizer, f" {w}"), i] = 1.0
        for p in range(config.context_size):
            model.W_pos[p, len(WORDS) + p] = 1.0
    return model.eval()


def scale_sae(features: Sequence[WorldFeature], positions: Sequence[tuple[int, ...]],
              W_dec: torch.Tensor, config: ScaleConfig) -> StandardSAE:
    """Feature f reads its members' dimensions and its positions' (module docstring); a
    dead one reads nothing, with bias -1. The decoder is `W_dec`."""
    d_sae, d_model = W_dec.shape
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, metadata=planted_metadata(
        HOOK, neuronpedia_id=WORLD_NEURONPEDIA_ID, context_size=config.context_size)))
    column = {w: i for i, w in enumerate(WORDS)}
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.b_enc.fill_(-1.0)
        for f in features:
            if not f.members:
                continue
            for i, w in enumerate(f.members):
                sae.W_enc[column[w], f.index] = WORD_WEIGHT * (1.0 + 0.25 * (i % 4))
            for p in positions[f.index]:
                sae.W_enc[len(WORDS) + p, f.index] = POSITION_WEIGHT
            sae.b_enc[f.index] = BIAS
        sae.W_dec.copy_(W_dec)
    return sae


def build_scale_world(directory: Path, config: ScaleConfig | None = None,
                      **changes: Any) -> World:
    """Plant a world of `ScaleConfig.n_features` features (keyword arguments override its
    fields). Writes the subject tokenizer into `directory`."""
    config = replace(config or ScaleConfig(), **changes)
    features = plan_features(config.world_config())
    tokenizer = _train_tokenizer(Path(directory), slots=WORLD_SLOTS)
    subject = scale_subject(tokenizer, config)
    gen = torch.Generator().manual_seed(config.seed)
    d_model = int(subject.cfg.d_model)
    directions = concept_directions(d_model, gen)
    W_dec = decoder_rows(features, directions, config.world_config().decoder_noise, gen)
    sae = scale_sae(features, feature_positions(config), W_dec, config)
    return World(subject=subject, sae=sae, corpus=tuple(scale_documents(config, tokenizer)),
                 features=features, tokenizer=tokenizer, directions=directions)
