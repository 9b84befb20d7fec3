"""The activation cache's reads: a batch's contexts are sliced out of their shards, whatever
the shards hold."""

from __future__ import annotations

import random

import pytest

from saelens_tokenlabel.sae.cache import ActivationCache

from .test_examples import make_cache


def test_contexts_are_sliced_out_without_reading_a_shard_whole(tmp_path, monkeypatch):
    """Every batch reads its features' contexts (`prepare_batch`); reading a whole shard for
    them, its activations included (which grow with the SAE), would make rendering cost
    batches x cache: quadratic in the features."""
    rng = random.Random(0)
    contexts = [[0] + [rng.randrange(1, 50) for _ in range(rng.randrange(3, 12))]
                for _ in range(60)]
    entries = {(c, p, f): 1.0 for c in range(60) for p in range(1, len(contexts[c]))
               for f in range(40) if (c + p + f) % 3 == 0}
    cache = make_cache(tmp_path / "cache", contexts, entries, d_sae=40, shard_tokens=64)
    assert cache.n_shards > 4
    whole = {c: ids for c, ids in enumerate(contexts)}

    def no_whole_shards(self, i):
        raise AssertionError(f"shard {i} read whole")

    monkeypatch.setattr(ActivationCache, "shard", no_whole_shards)
    wanted = [59, 0, 17, 17, 33, 5]
    assert cache.contexts(wanted) == {c: whole[c] for c in wanted}
    assert cache.contexts(range(60)) == whole
    with pytest.raises(IndexError):
        cache.contexts([60])
