"""Examples per feature: top, quantile-spread, random and near-miss picks, streamed over
shards; rendered as whole words in context windows."""

from __future__ import annotations

import json
import random

import pytest
import torch

from saelens_tokenlabel.sae import ExampleConfig, WordDecoder, select_examples
from saelens_tokenlabel.sae.cache import META_FILENAME, ActivationCache, ShardWriter
from saelens_tokenlabel.sae.fingerprint import CACHE_FORMAT_VERSION
from saelens_tokenlabel.sae.render import contexts_needed, render_feature
from saelens_tokenlabel.sae.subject import Subject

BOS = 0


def make_cache(directory, contexts, entries, d_sae=4, shard_tokens=50):
    """An activation cache written directly: `entries` maps (context, position, feature) to
    an activation."""
    directory.mkdir(parents=True, exist_ok=True)
    w = ShardWriter(directory, shard_tokens)
    for c, ids in enumerate(contexts):
        mine = [(p, f, v) for (cc, p, f), v in entries.items() if cc == c]
        locs = torch.tensor([[0, p, f] for p, f, _ in mine], dtype=torch.int32).reshape(-1, 3)
        w.add([ids], locs, torch.tensor([v for _, _, v in mine]))
    w.flush()
    meta = {"format_version": CACHE_FORMAT_VERSION, "complete": True, "features": None,
            "d_sae": d_sae, "special_token_ids": [BOS], "n_contexts": w.n_contexts,
            "n_tokens": w.n_tokens, "nnz": w.nnz, "shards": w.shards, "context_size": 64,
            "prepend_bos": True}
    (directory / META_FILENAME).write_text(json.dumps(meta))
    return ActivationCache.open(directory)


@pytest.fixture
def graded(tmp_path):
    """40 contexts of 10 tokens; feature 0 has activation c*10+p (1..399) on odd positions,
    feature 1 fires only on BOS (position 0), feature 2 never fires, feature 3 on every token
    of every fourth context."""
    rng = random.Random(0)
    contexts = [[BOS] + [rng.randrange(5, 60) for _ in range(9)] for _ in range(40)]
    entries = {}
    for c in range(40):
        entries[(c, 0, 1)] = 100.0
        for p in range(1, 10):
            if p % 2:
                entries[(c, p, 0)] = float(c * 10 + p)
            if c % 4 == 0:
                entries[(c, p, 3)] = 1.0
    return contexts, entries, tmp_path


def test_top_quantile_and_counts_do_not_depend_on_sharding(graded):
    contexts, entries, tmp = graded
    cfg = ExampleConfig(n_top=5, n_quantile=10, n_quantile_bins=5, reservoir_size=1000,
                        n_random=6, n_near_miss=4)
    results = []
    for shard_tokens in (10_000, 37):
        cache = make_cache(tmp / str(shard_tokens), contexts, entries, shard_tokens=shard_tokens)
        assert cache.n_shards == (1 if shard_tokens == 10_000 else 10)
        sels, pool = select_examples(cache, [0, 1, 2, 3], cfg)
        results.append((sels, pool))
        s = sels[0]
        active = sorted((v for (c, p, f), v in entries.items() if f == 0), reverse=True)
        assert s.n_active == len(active) and s.max_activation == active[0]
        assert [v for _, _, v in s.top] == active[:5]
        assert all(v == c * 10 + p for c, p, v in s.top + s.quantile)
        # Quantile picks: two from each fifth of the remaining activations.
        rest = sorted(active[5:])
        edges = [rest[len(rest) * i // 5] for i in range(6)[:-1]] + [rest[-1] + 1]
        bins = [sum(lo <= v < hi for _, _, v in s.quantile) for lo, hi in
                zip(edges, edges[1:], strict=False)]
        assert bins == [2, 2, 2, 2, 2]
        assert not {(c, p) for c, p, _ in s.top} & {(c, p) for c, p, _ in s.quantile}
        # BOS is special: the feature that fires only there has no usable activation.
        assert sels[1].dead and sels[2].dead and not sels[3].dead
        assert sels[3].n_active == 10 * 9
        # The random pool holds no special token; its tokens are distinct.
        assert all(p != 0 for _, p in pool.tokens)
        assert len(set(pool.tokens)) == len(pool.tokens) == 4 * cfg.n_random
        assert pool.n_tokens == 40 * 9
    # Same seed, same picks, however the cache is sharded.
    (a, pa), (b, pb) = results
    assert a[0].top == b[0].top and a[0].quantile == b[0].quantile
    assert pa.tokens == pb.tokens


def test_a_features_picks_do_not_depend_on_the_other_features_selected(graded):
    # A resumed run selects only the features it still has to label: each must get the
    # examples it gets among all of them.
    contexts, entries, tmp = graded
    cfg = ExampleConfig(n_top=5, n_quantile=10, n_quantile_bins=5, reservoir_size=1000,
                        n_random=6, n_near_miss=4)
    cache = make_cache(tmp / "c", contexts, entries)
    every, pool = select_examples(cache, [0, 1, 2, 3], cfg)
    for subset in ([0], [3, 0], [3]):
        some, pool_some = select_examples(cache, subset, cfg)
        assert pool_some.tokens == pool.tokens
        for f in subset:
            assert some[f] == every[f], f

            def near_pool(acts, f=f):
                return {(c, p): a[f] for c, ps in acts.items() for p, a in ps.items()
                        if f in a}
            assert near_pool(pool_some.acts) == near_pool(pool.acts)


def test_rendered_examples_are_whole_words_and_inactive_picks_are_inactive(
        subject_tokenizer, subject, sae, toy_corpus, tmp_path):
    from saelens_tokenlabel.sae import CacheConfig, build_activation_cache

    from .planted import ANIMAL_FEATURE, planted_tokens

    cache = build_activation_cache(Subject.of(subject, sae), toy_corpus, None,
                                   CacheConfig(cache_dir=tmp_path, shard_tokens=200))
    cfg = ExampleConfig(n_top=6, n_quantile=6, n_random=8, n_near_miss=8, window_before=3,
                        window_after=2)
    sels, pool = select_examples(cache, [ANIMAL_FEATURE], cfg)
    sel = sels[ANIMAL_FEATURE]
    contexts = cache.contexts(sorted(contexts_needed(sel, pool)))
    out = render_feature(sel, pool, contexts, WordDecoder(subject_tokenizer), cfg,
                         cache.special_ids)
    kinds = dict.fromkeys(["top", "quantile", "contrast", "near_miss", "random"], 0)
    animals = {subject_tokenizer.decode([t]).strip()
               for t in planted_tokens(subject_tokenizer)[ANIMAL_FEATURE]}
    for (text, word, act), kind in zip(out.examples, out.kinds, strict=True):
        kinds[kind] += 1
        assert word in text and "<|endoftext|>" not in text
        assert (act > 0) == (kind in ("top", "quantile")) == (word in animals)
        assert len(text.split()) <= 3 + 2 + 1  # the window: 3 tokens before, 2 after
    # The planted feature fires on every occurrence of its words: it has a contrast quota,
    # but no silent occurrence exists to fill it.
    assert sel.contrast_quota and sum(sel.contrast_quota.values()) == cfg.n_contrast
    assert kinds == {"top": 6, "quantile": 6, "contrast": 0, "near_miss": 8, "random": 8}
    # Near-misses come from the windows of the activating examples.
    active_texts = {t for (t, _, a) in out.examples if a > 0}
    near_words = [w for (t, w, a), k in zip(out.examples, out.kinds, strict=True)
                  if k == "near_miss"]
    assert all(any(w in t for t in active_texts) for w in near_words)
    assert len({(t, w) for t, w, _ in out.examples}) == len(out.examples)  # no duplicates


def test_example_config_checks_itself():
    with pytest.raises(ValueError, match="n_top"):
        ExampleConfig(n_top=-1)
    with pytest.raises(ValueError, match="activating"):
        ExampleConfig(n_top=0, n_quantile=0)
    with pytest.raises(ValueError, match="inactive"):
        ExampleConfig(n_random=0, n_near_miss=0)
    with pytest.raises(ValueError, match="n_contrast"):
        ExampleConfig(n_contrast=-1)


def test_a_stored_config_from_before_contrasts_rebuilds_its_examples_without_them():
    # Runs stored before contrast examples existed were made without them: comparing or
    # resuming them must rebuild the examples they had, whatever the default is now.
    old = {k: v for k, v in ExampleConfig(n_top=5).to_dict().items() if k != "n_contrast"}
    assert ExampleConfig.from_stored(old) == ExampleConfig(n_top=5, n_contrast=0)
    assert ExampleConfig.from_dict(old).n_contrast == 20  # the default, for new configs
    assert ExampleConfig.from_stored(ExampleConfig(n_contrast=7).to_dict()).n_contrast == 7
