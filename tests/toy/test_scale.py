"""The scaling planted world: the subject stays the same whatever the SAE's width, and every
feature fires exactly on its members at its positions, graded as in `toy.world`."""

from __future__ import annotations

import torch

from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy.planted import single_token
from saelens_tokenlabel.toy.scale import (
    POSITIONS_PER_FEATURE,
    WORDS,
    ScaleConfig,
    build_scale_world,
    feature_positions,
)


def test_features_fire_on_their_members_at_their_positions_only(tmp_path):
    config = ScaleConfig(n_features=96, n_tokens=6_000)
    world = build_scale_world(tmp_path / "w", config)
    wider = build_scale_world(tmp_path / "w2", config, n_features=384, n_tokens=200)
    assert wider.subject.cfg.d_model == world.subject.cfg.d_model  # the subject stays
    assert wider.sae.cfg.d_sae == 384
    assert sum(len(world.tokenizer(d)["input_ids"]) for d in world.corpus) >= 6_000
    cache = build_activation_cache(Subject.of(world.subject, world.sae), list(world.corpus),
                                   None, CacheConfig(cache_dir=tmp_path / "cache"),
                                   progress=False)
    positions = feature_positions(config)
    assert all(len(p) == POSITIONS_PER_FEATURE for p in positions)
    members = {f.index: {single_token(world.tokenizer, f" {w}"): i
                         for i, w in enumerate(f.members)} for f in world.features}
    expected = {}
    for shard in cache.shards():
        for c in range(shard.n_contexts):
            ids = shard.context(c)
            for f in world.features:
                for p in positions[f.index]:
                    if p < len(ids) and ids[p] in members[f.index]:
                        grade = 1.0 + 0.25 * (members[f.index][ids[p]] % 4)
                        expected[(shard.first_context + c, p, f.index)] = 2 * grade - 0.5
    got = {}
    for shard in cache.shards():
        for (c, p, f), v in zip(shard.locations.tolist(), shard.activations.tolist(),
                                strict=True):
            got[(shard.first_context + c, p, f)] = v
    assert got.keys() == expected.keys() and len(got) > 200
    assert all(abs(got[k] - expected[k]) < 1e-5 for k in got)  # 1.5 to 3.0
    live = {f for _, _, f in got}
    assert all(world.features[f].members for f in live)
    assert {f.index for f in world.features if f.kind == "dead"}.isdisjoint(live)
    # Lexicon words are about one token in fifteen: a feature's inactive examples seldom
    # hold its own words.
    word_ids = {single_token(world.tokenizer, f" {w}") for w in WORDS}
    tokens = torch.cat([s.tokens for s in cache.shards()]).tolist()
    share = sum(t in word_ids for t in tokens) / len(tokens)
    assert 0.04 < share < 0.1, share
