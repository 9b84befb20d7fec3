"""The activation cache's memory does not grow with the corpus.

Two checks, neither racing a sampling thread:

* what the design bounds, counted exactly in this process: contexts are pulled from the corpus
  one batch at a time, `sae.encode` never sees more than `encode_batch_tokens` rows (so the
  dense ``[tokens x d_sae]`` block is at most ``encode_batch_tokens x d_sae``), and the shard
  writer never holds more than ``shard_tokens`` plus one batch of tokens
  (``meta["peak_buffered_tokens"]``), for a corpus four times as long alike;
* one coarse check of the whole: each cache build in a fresh Python process, whose peak
  resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``, exact, kept by the kernel) above
  its level after a warm-up build must not grow with the corpus. A wide SAE (d_sae = 8192)
  makes the dense activations of the larger corpus about 1 GB: holding them, or anything
  proportional to the corpus, would show many times over the margin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saelens_tokenlabel.sae import CacheConfig, activations, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject

from .planted import D_MODEL, HOOK, MODEL_NAME, toy_sentences

D_SAE = 8192
MB = 1 << 20
CONTEXT = 64
CONFIG = dict(batch_size=32, encode_batch_tokens=512, shard_tokens=2048)
REPO = Path(__file__).resolve().parents[2]


def wide_sae() -> StandardSAE:
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=D_SAE, metadata=SAEMetadata(
        hook_name=HOOK, model_name=MODEL_NAME, context_size=CONTEXT, prepend_bos=True)))
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)  # sparse-ish, as real SAEs are
    return sae


def documents(n_sentences: int, seed: int) -> list[str]:
    s = toy_sentences(n_sentences, seed=seed)
    return [" ".join(s[i : i + 8]) for i in range(0, len(s), 8)]


def _build_counting(subject, sae, corpus, cache_dir, monkeypatch) -> tuple[dict, dict]:
    """Build the cache while counting what each stage holds; (meta, counts)."""
    counts = {"pulled": 0, "encoded": 0, "most_ahead": 0, "most_rows": 0, "encode_calls": 0}
    iter_contexts, encode_contexts = activations.iter_contexts, activations.encode_contexts

    def counted_contexts(*a, **k):
        for item in iter_contexts(*a, **k):
            counts["pulled"] += 1
            yield item

    def counted_encode(encoder, contexts, *a, **k):
        # Contexts pulled from the corpus but not yet encoded: this batch, nothing more.
        counts["most_ahead"] = max(counts["most_ahead"], counts["pulled"] - counts["encoded"])
        counts["encoded"] += len(contexts)
        return encode_contexts(encoder, contexts, *a, **k)

    def counted_sae_encode(x):
        counts["encode_calls"] += 1
        counts["most_rows"] = max(counts["most_rows"], len(x))
        return type(sae).encode(sae, x)

    monkeypatch.setattr(activations, "iter_contexts", counted_contexts)
    monkeypatch.setattr(activations, "encode_contexts", counted_encode)
    monkeypatch.setattr(sae, "encode", counted_sae_encode)
    try:
        cache = build_activation_cache(Subject.of(subject, sae), corpus, [0, 1, 2],
                                       CacheConfig(cache_dir=cache_dir, **CONFIG))
    finally:
        monkeypatch.undo()
    return cache.meta, counts


def test_cache_holds_one_batch_one_encode_block_and_one_shard(subject, tmp_path, monkeypatch):
    sae = wide_sae()
    batch_tokens = CONFIG["batch_size"] * CONTEXT
    held = CONFIG["shard_tokens"] + batch_tokens  # the writer's bound
    seen = {}
    for name, corpus in [("small", documents(1000, seed=1)), ("large", documents(4000, seed=2))]:
        meta, counts = _build_counting(subject, sae, corpus, tmp_path / name, monkeypatch)
        seen[name] = meta
        assert counts["encoded"] == meta["n_contexts"] and counts["encode_calls"] > 1
        assert counts["most_ahead"] <= CONFIG["batch_size"], counts  # streamed, not listed
        assert counts["most_rows"] <= CONFIG["encode_batch_tokens"], counts
        assert 0 < meta["peak_buffered_tokens"] < held, meta["peak_buffered_tokens"]
    small, large = seen["small"], seen["large"]
    assert large["n_tokens"] > 3.5 * small["n_tokens"]
    # The bounds can tell: the large corpus holds several times what the writer may buffer,
    # and many times what one call of sae.encode may see.
    assert large["n_tokens"] > 4 * held
    assert large["n_tokens"] > 50 * CONFIG["encode_batch_tokens"]
    assert len(large["shards"]) > 2 * len(small["shards"])


CHILD = """
import gc, json, resource, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject
from tests.sae.planted import subject_model, toy_sentences, train_subject_tokenizer
from tests.sae.test_memory import CONFIG, documents, wide_sae

out, n_sentences, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
subject = subject_model(train_subject_tokenizer(out / "tok"))
sae = wide_sae()
corpus = documents(n_sentences, seed)
cfg = CacheConfig(cache_dir=out / "cache", **CONFIG)
# Warm up allocator and kernels, so that one-off costs count against neither corpus.
build_activation_cache(Subject.of(subject, sae), toy_sentences(40, seed=3), [0, 1, 2], cfg,
                       progress=False)
gc.collect()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cache = build_activation_cache(Subject.of(subject, sae), corpus, [0, 1, 2], cfg, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth": (peak - base) * 1024, "n_tokens": cache.n_tokens}))
"""


@pytest.mark.subprocess
def test_cache_peak_memory_does_not_grow_with_corpus_length(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = {name: subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / name),
                                    str(n), str(seed)], cwd=tmp_path, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, n, seed in [("small", 1000, 1), ("large", 4000, 2)]}
    got = {}
    for name, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        got[name] = json.loads(out.strip().splitlines()[-1])
    small, large = got["small"], got["large"]
    assert large["n_tokens"] > 3.5 * small["n_tokens"]
    dense_large = large["n_tokens"] * D_SAE * 4
    margin = 64 * MB
    # The test can tell: dense activations of the large corpus would exceed it many times.
    assert dense_large > 10 * margin
    print(f"peak above warm-up: {small['growth'] / MB:.1f} MB ({small['n_tokens']} tokens), "
          f"{large['growth'] / MB:.1f} MB ({large['n_tokens']} tokens); dense would be "
          f"{dense_large / MB:.0f} MB")
    assert large["growth"] < small["growth"] + margin, (small, large)
