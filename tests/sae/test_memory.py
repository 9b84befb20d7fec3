"""The activation cache's peak memory does not grow with the corpus.

A wide SAE (d_sae = 8192) makes the dense ``[tokens x d_sae]`` activations of the larger
corpus about 1 GB: holding them, or anything proportional to the corpus, would show in the
peak resident memory measured while the cache is built.
"""

from __future__ import annotations

import gc
import threading
import time

import psutil
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saelens_tokenlabel.sae import CacheConfig, build_activation_cache

from .planted import D_MODEL, HOOK, MODEL_NAME, toy_sentences

D_SAE = 8192
MB = 1 << 20


def _wide_sae() -> StandardSAE:
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=D_SAE, metadata=SAEMetadata(
        hook_name=HOOK, model_name=MODEL_NAME, context_size=64, prepend_bos=True)))
    with torch.no_grad():
        sae.b_enc.fill_(-0.5)  # sparse-ish, as real SAEs are
    return sae


def _documents(n_sentences: int, seed: int) -> list[str]:
    s = toy_sentences(n_sentences, seed=seed)
    return [" ".join(s[i : i + 8]) for i in range(0, len(s), 8)]


def _peak_rss_during(fn) -> int:
    """Peak resident memory above the starting level while `fn` runs (sampled every 2 ms)."""
    gc.collect()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak - base


def test_cache_peak_memory_does_not_grow_with_corpus_length(subject, tmp_path):
    sae = _wide_sae()
    small = _documents(1000, seed=1)
    large = _documents(4000, seed=2)  # four times as long
    cfg = CacheConfig(cache_dir=tmp_path, batch_size=32, encode_batch_tokens=512,
                      shard_tokens=2048)
    # Warm up allocator and kernels so that one-off costs count against neither run.
    build_activation_cache(subject, sae, toy_sentences(40, seed=3), [0, 1, 2], cfg)
    results = {}

    def run(name, corpus):
        results[name] = build_activation_cache(subject, sae, corpus, [0, 1, 2], cfg)

    peak_small = _peak_rss_during(lambda: run("small", small))
    peak_large = _peak_rss_during(lambda: run("large", large))
    n_large = results["large"].n_tokens
    assert n_large > 3.5 * results["small"].n_tokens
    dense_large = n_large * D_SAE * 4
    margin = 64 * MB
    # The test can tell: dense activations of the large corpus would exceed it many times.
    assert dense_large > 10 * margin
    print(f"peak above start: {peak_small / MB:.1f} MB ({results['small'].n_tokens} tokens), "
          f"{peak_large / MB:.1f} MB ({n_large} tokens); dense would be "
          f"{dense_large / MB:.0f} MB")
    assert peak_large < peak_small + margin, (peak_small / MB, peak_large / MB)
    assert results["large"].n_shards > 4 * results["small"].n_shards / 2
