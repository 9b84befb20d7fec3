"""The activation cache: exactly the expected sparse activations, the SAE's hook, head, context
and BOS settings, reuse by key, and atomic writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import saelens_tokenlabel.sae.activations as activations
from saelens_tokenlabel.sae import CacheConfig, HookError, build_activation_cache
from saelens_tokenlabel.sae.cache import META_FILENAME
from saelens_tokenlabel.sae.subject import Subject

from .planted import (
    ANIMAL_FEATURE,
    DEAD_FEATURE,
    DIGIT_FEATURE,
    expected_activations,
    planted_sae,
    planted_tokens,
)


def _cache_entries(cache, features):
    out = {}
    for f in features:
        ctx, pos, val = cache.feature_activations(f)
        for c, p, v in zip(ctx.tolist(), pos.tolist(), val.tolist(), strict=True):
            out[(c, p, f)] = v
    return out


def test_cache_holds_exactly_the_planted_activations(subject, sae, toy_corpus, cache_dir,
                                                     subject_tokenizer):
    feats = [ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE, 5]
    cache = build_activation_cache(Subject.of(subject, sae), toy_corpus, feats,
                                   CacheConfig(cache_dir=cache_dir, shard_tokens=300,
                                               batch_size=7), progress=False)
    assert cache.n_shards > 1  # small shards: the streaming writer really flushed
    contexts = cache.contexts(range(cache.n_contexts))
    assert len(contexts) == len(toy_corpus)  # one context per (short) sentence
    for i, text in enumerate(toy_corpus):  # BOS, then the sentence's tokens
        assert contexts[i] == [subject_tokenizer.bos_token_id] + subject_tokenizer(
            text, add_special_tokens=False)["input_ids"]
    got = _cache_entries(cache, feats)
    want = expected_activations(subject, sae, contexts, feats)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-5)
    # The planted features fire on their tokens and nowhere else; the dead one never.
    planted = planted_tokens(subject_tokenizer)
    for (c, p, f) in got:
        if f in planted:
            assert contexts[c][p] in planted[f]
    n_animal = sum(t in planted[ANIMAL_FEATURE] for ids in contexts.values() for t in ids)
    assert sum(f == ANIMAL_FEATURE for _, _, f in got) == n_animal > 0
    assert not any(f == DEAD_FEATURE for _, _, f in got)
    # Only the requested features are stored, sparse, with token ids, in safetensors.
    shard = load_file(str(cache.directory / cache.meta["shards"][0]["file"]))
    assert set(shard) == {"tokens", "offsets", "locations", "activations"}
    assert shard["locations"].shape[1] == 3 and shard["locations"].dtype == torch.int32
    assert set(shard["locations"][:, 2].tolist()) <= set(feats)
    assert cache.meta["nnz"] == len(got)


def test_second_run_reuses_the_cache_and_superset_serves_subset(
        subject, sae, toy_corpus, cache_dir, monkeypatch):
    toy_corpus = toy_corpus[:40]
    cfg = CacheConfig(cache_dir=cache_dir)
    first = build_activation_cache(Subject.of(subject, sae), toy_corpus, [0, 1], cfg,
                                   progress=False)

    def boom(*a, **k):
        raise AssertionError("the model ran again although the cache matched")

    monkeypatch.setattr(activations, "encode_contexts", boom)
    assert build_activation_cache(Subject.of(subject, sae), toy_corpus, [0, 1], cfg).directory == \
        first.directory
    assert build_activation_cache(Subject.of(subject, sae), toy_corpus, [1], cfg).directory == \
        first.directory
    monkeypatch.undo()
    # Another corpus, another SAE, or other settings: another cache.
    other_sae = planted_sae()
    with torch.no_grad():
        other_sae.b_enc[0] = -0.6
    dirs = {
        build_activation_cache(Subject.of(subject, sae), toy_corpus[:-1], [0, 1], cfg).directory,
        build_activation_cache(Subject.of(subject, other_sae), toy_corpus, [0, 1], cfg).directory,
        build_activation_cache(Subject.of(subject, sae), toy_corpus, [0, 1],
                               CacheConfig(cache_dir=cache_dir, context_size=8)).directory,
    }
    assert len(dirs) == 3 and first.directory not in dirs
    # overwrite=True recomputes in place.
    again = build_activation_cache(Subject.of(subject, sae), toy_corpus, [0, 1],
                                   CacheConfig(cache_dir=cache_dir, overwrite=True))
    assert again.directory == first.directory


def test_context_size_and_bos_follow_the_sae_metadata(subject, toy_corpus, cache_dir,
                                                      subject_tokenizer):
    long_doc = " ".join(toy_corpus[:6])
    n = len(subject_tokenizer(long_doc, add_special_tokens=False)["input_ids"])
    bos = subject_tokenizer.bos_token_id
    with_bos = build_activation_cache(Subject.of(subject, planted_sae(context_size=10,
                                                                      prepend_bos=True)),
                                      [long_doc], None, CacheConfig(cache_dir=cache_dir))
    ctxs = with_bos.contexts(range(with_bos.n_contexts))
    assert with_bos.n_contexts == -(-n // 9)
    assert all(c[0] == bos and len(c) <= 10 for c in ctxs.values())
    without = build_activation_cache(Subject.of(subject, planted_sae(context_size=10,
                                                                     prepend_bos=False)),
                                     [long_doc], None, CacheConfig(cache_dir=cache_dir))
    ctxs = without.contexts(range(without.n_contexts))
    assert without.n_contexts == -(-n // 10)
    assert all(bos not in c for c in ctxs.values())
    assert sum(len(c) for c in ctxs.values()) == n
    # The config overrides the metadata; max_tokens and max_documents cut the corpus.
    cut = build_activation_cache(Subject.of(subject, planted_sae()), toy_corpus, None,
                                 CacheConfig(cache_dir=cache_dir, max_tokens=25,
                                             prepend_bos=False))
    assert cut.n_tokens == 25
    few = build_activation_cache(Subject.of(subject, planted_sae()), toy_corpus, None,
                                 CacheConfig(cache_dir=cache_dir, max_documents=3))
    assert few.n_contexts == 3


def test_stop_at_layer_never_runs_past_the_hook(subject, toy_corpus, cache_dir, monkeypatch):
    sae = planted_sae(hook="blocks.0.hook_resid_post")
    calls = []
    block1 = subject.blocks[1]
    original = block1.forward
    monkeypatch.setattr(block1, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    build_activation_cache(Subject.of(subject, sae), toy_corpus[:10], [0],
                           CacheConfig(cache_dir=cache_dir))
    assert calls == []
    spec = Subject.of(subject, sae).hook
    assert spec.stop_at_layer == 1


def test_head_index_and_padding_match_unpadded_runs(subject, toy_corpus, cache_dir):
    """A per-head hook (hook_z, head 1): batched right-padded contexts give the activations of
    each context run alone."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_head = subject.cfg.d_head
    sae = StandardSAE(StandardSAEConfig(d_in=d_head, d_sae=6, metadata=SAEMetadata(
        hook_name="blocks.1.attn.hook_z", hook_head_index=1, model_name="tiny-subject",
        context_size=32, prepend_bos=True)))
    docs = toy_corpus[:9]
    cache = build_activation_cache(Subject.of(subject, sae), docs, None,
                                   CacheConfig(cache_dir=cache_dir, batch_size=4))
    contexts = cache.contexts(range(cache.n_contexts))
    want = {}
    for c, ids in contexts.items():
        _, run = subject.run_with_cache(torch.tensor([ids]), names_filter="blocks.1.attn.hook_z")
        with torch.no_grad():
            acts = sae.encode(run["blocks.1.attn.hook_z"][0, :, 1])
        for p, f in (acts != 0).nonzero().tolist():
            want[(c, p, f)] = float(acts[p, f])
    got = _cache_entries(cache, range(6))
    assert got.keys() == want.keys() and len(want) > 0
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-4)


def test_bad_inputs_are_clear_errors(subject, toy_corpus, cache_dir):
    with pytest.raises(HookError, match="does not have"):
        build_activation_cache(Subject.of(subject, planted_sae(hook="blocks.7.hook_resid_pre")),
                               toy_corpus, [0], CacheConfig(cache_dir=cache_dir))
    with pytest.raises(HookError, match="d_in"):
        build_activation_cache(Subject.of(subject, planted_sae(hook="blocks.0.mlp.hook_post")),
                               toy_corpus, [0], CacheConfig(cache_dir=cache_dir))
    with pytest.raises(HookError, match="hook_name"):
        build_activation_cache(Subject.of(subject, planted_sae(hook=None)), toy_corpus, [0],
                               CacheConfig(cache_dir=cache_dir))
    with pytest.raises(ValueError, match="no tokens"):
        build_activation_cache(Subject.of(subject, planted_sae()), ["", ""], [0],
                               CacheConfig(cache_dir=cache_dir))
    with pytest.raises(ValueError, match="shard_tokens"):
        CacheConfig(shard_tokens=0)


def test_a_failed_run_leaves_no_cache_behind(subject, sae, toy_corpus, cache_dir, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(activations, "encode_contexts", fail)
    with pytest.raises(RuntimeError):
        build_activation_cache(Subject.of(subject, sae), toy_corpus, [0],
                               CacheConfig(cache_dir=cache_dir))
    assert not list(cache_dir.rglob(META_FILENAME))
    assert not [p for p in cache_dir.rglob("*") if ".tmp-" in p.name]
    monkeypatch.undo()
    cache = build_activation_cache(Subject.of(subject, sae), toy_corpus, [0],
                                   CacheConfig(cache_dir=cache_dir))
    meta = json.loads((cache.directory / META_FILENAME).read_text())
    assert meta["complete"] and meta["features"] == [0]
