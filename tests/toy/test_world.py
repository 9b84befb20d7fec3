"""The planted SAE world: hundreds of features of known kinds and truths, firing exactly on
their members, with decoder rows clustered by concept and liars whose decoder points elsewhere;
all deterministic in the seed."""

from __future__ import annotations

from itertools import combinations
from statistics import mean

import pytest
import torch

from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy.lexicon import (
    ANIMALS,
    CONCEPTS,
    DIGITS,
    MAMMALS,
    NUMBER_WORDS,
    OBJECTS,
    SUBSETS,
)
from saelens_tokenlabel.toy.planted import HOOK, single_token
from saelens_tokenlabel.toy.world import (
    KINDS,
    SPARE_DIMS,
    WorldConfig,
    build_world,
    most_specific_concept,
)

LIARS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), liars=LIARS)


def _member_tokens(world, feature):
    return {single_token(world.tokenizer, f" {w}") for w in feature.members}


def test_kinds_are_counted_and_every_concept_has_several_features(world, tmp_path):
    n = len(world.features)
    assert n == 240 >= 200
    assert [f.index for f in world.features] == list(range(n))
    kinds = world.kinds()
    assert list(kinds) == list(KINDS)
    assert {k: len(v) for k, v in kinds.items()} == {
        "concept": n - 12 - 24 - LIARS, "noise": 24, "dead": 12, "liar": LIARS}
    assert sorted(i for ids in kinds.values() for i in ids) == list(range(n))
    per_concept = {c: sum(f.concept == c for f in world.features if f.kind == "concept")
                   for c in CONCEPTS}
    assert min(per_concept.values()) >= 5, per_concept
    # Kinds are spread over the indices, not in blocks.
    assert max(kinds["dead"]) - min(kinds["dead"]) > n / 2
    assert world.sae.cfg.d_sae == n and world.sae.cfg.d_in == n + SPARE_DIMS
    assert world.subject.cfg.d_model == n + SPARE_DIMS and world.subject.cfg.n_layers == 1
    assert world.sae.cfg.metadata.hook_name == HOOK
    assert world.sae.cfg.metadata.neuronpedia_id
    defaults = build_world(tmp_path).kinds()
    assert len(defaults["liar"]) == 0 and len(defaults["concept"]) == n - 36


def test_truth_is_the_most_specific_concept_of_the_members(world):
    truth = world.truth()
    for f in world.features:
        assert truth[f.index] == f.concept
        if f.kind in ("dead", "noise"):
            assert f.concept is None and f.decoder_concept is None
            assert (f.members == ()) == (f.kind == "dead")
            continue
        words = CONCEPTS[f.concept]
        assert most_specific_concept(f.members) == f.concept
        assert set(f.members) <= set(words) and len(set(f.members)) == len(f.members)
        assert 3 <= len(f.members) <= len(words)
        assert len(f.members) >= 0.4 * len(words) - 1 and len(f.members) <= 0.9 * len(words) + 1
        members = set(f.members)
        if f.concept == "mammal":
            assert members <= set(MAMMALS)
        if f.concept == "animal":
            assert members <= set(ANIMALS) and members - set(MAMMALS)
        if f.concept == "digit":
            assert members <= set(DIGITS)
        if f.concept == "number":
            assert members & set(NUMBER_WORDS)
    for f in world.features:
        if f.kind == "noise":  # no concept explains them: always some object words
            assert set(f.members) & set(OBJECTS) and most_specific_concept(f.members) is None
        if f.kind == "concept":
            assert f.decoder_concept == f.concept
        if f.kind == "liar":
            assert f.decoder_concept not in (f.concept, SUBSETS.get(f.concept))
            assert SUBSETS.get(f.decoder_concept) != f.concept
    # Animal features usually mix mammals and other animals.
    animal = [set(f.members) for f in world.features if f.concept == "animal"]
    assert sum(bool(m & set(MAMMALS)) for m in animal) > len(animal) / 2


def test_each_feature_fires_exactly_on_its_members(world, tmp_path):
    cache = build_activation_cache(Subject.of(world.subject, world.sae), list(world.corpus), None,
                                   CacheConfig(cache_dir=tmp_path), progress=False)
    contexts = cache.contexts(range(cache.n_contexts))
    assert len(contexts) == len(world.corpus)
    token_count: dict[int, int] = {}
    for ids in contexts.values():
        for t in ids:
            token_count[t] = token_count.get(t, 0) + 1
    for f in world.features:
        ctx, pos, val = cache.feature_activations(f.index)
        fired = {(c, p) for c, p in zip(ctx.tolist(), pos.tolist(), strict=True)}
        tokens = _member_tokens(world, f)
        want = {(c, p) for c, ids in contexts.items() for p, t in enumerate(ids) if t in tokens}
        assert fired == want, (f.index, f.kind)
        if f.kind == "dead":
            assert not fired
        else:
            assert ((val >= 1.5 - 1e-5) & (val <= 3.0 + 1e-5)).all()
            # Every member is in the corpus several times.
            assert min(token_count.get(t, 0) for t in tokens) >= 4, f.index


def test_decoder_rows_cluster_by_concept_and_liars_point_elsewhere(world):
    W = world.sae.W_dec.detach()
    assert torch.allclose(W.norm(dim=1), torch.ones(len(world.features)), atol=1e-5)
    dirs = world.directions
    concept = [f for f in world.features if f.kind == "concept"]
    to_own = [float(W[f.index] @ dirs[f.concept]) for f in concept]
    assert 0.6 <= mean(to_own) <= 0.8 and min(to_own) > 0.45
    same, different = [], []
    for a, b in combinations(concept, 2):
        (same if a.concept == b.concept else different).append(float(W[a.index] @ W[b.index]))
    assert 0.4 <= mean(same) <= 0.6
    assert abs(mean(different)) < 0.1
    assert mean(same) > mean(different) + 0.3
    # The hierarchies: a subset's direction lies near its parent's; others are unrelated.
    for child, parent in SUBSETS.items():
        assert float(dirs[child] @ dirs[parent]) > 0.6
    assert abs(float(dirs["color"] @ dirs["food"])) < 0.3
    liars = [f for f in world.features if f.kind == "liar"]
    for f in liars:
        assert float(W[f.index] @ dirs[f.decoder_concept]) > 0.45
        assert float(W[f.index] @ dirs[f.decoder_concept]) > float(W[f.index] @ dirs[f.concept])
    # Noise and dead rows are random: near no concept.
    for f in world.features:
        if f.decoder_concept is None:
            assert max(abs(float(W[f.index] @ d)) for d in dirs.values()) < 0.35


def test_the_seed_decides_everything(world, tmp_path):
    again = build_world(tmp_path / "again", liars=LIARS)
    assert torch.equal(again.sae.W_dec, world.sae.W_dec)
    assert torch.equal(again.subject.W_E, world.subject.W_E)
    assert again.corpus == world.corpus and again.features == world.features
    assert (tmp_path / "again" / "tokenizer.json").is_file()
    other = build_world(tmp_path / "other", WorldConfig(seed=1, liars=LIARS))
    assert not torch.equal(other.sae.W_dec, world.sae.W_dec)
    assert other.corpus != world.corpus and other.features != world.features


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="concept features"):
        WorldConfig(n_features=10, liars=6)
    with pytest.raises(ValueError, match="fractions"):
        WorldConfig(dead=1.5)
    with pytest.raises(TypeError):
        build_world(tmp_path, n_feature=300)
