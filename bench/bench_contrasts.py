"""What the same-word contrasts cost in `select_examples`, on a large synthetic cache.

The cache is written directly (`sae.cache.ShardWriter`, no model): `--tokens` tokens in contexts
of 128 (BOS first), drawn from a Zipf distribution over a GPT-2-sized vocabulary, and
`--features` features of two kinds, as in real SAEs:

* word features (most): each owns 1 to 8 token ids (drawn from a flattened Zipf, so some own
  frequent ones) and fires on them in a share of the contexts (its own share, 20% to 100%);
* diffuse features: fire at random positions, at a rate between 1e-5 and 3e-3 per token.

`select_examples` then runs over every feature with `ExampleConfig(n_contrast=0)` and with
the default (20 contrasts), alternately, `--repeats` times each; the script prints the median
seconds of each and their ratio, measured in this one run.

    OMP_NUM_THREADS=1 python bench/bench_contrasts.py       # 2M tokens, 16k features
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from saelens_tokenlabel.sae import ExampleConfig, select_examples
from saelens_tokenlabel.sae.cache import META_FILENAME, ActivationCache, ShardWriter
from saelens_tokenlabel.sae.fingerprint import CACHE_FORMAT_VERSION

VOCAB, BOS, CTX = 50257, 50256, 128


def zipf(n: int, s: float) -> torch.Tensor:
    p = 1.0 / (torch.arange(n, dtype=torch.float64) + 2.7) ** s
    return p / p.sum()


class World:
    """The synthetic corpus's token law and its features (module docstring)."""

    def __init__(self, n_features: int, gen: torch.Generator) -> None:
        self.rank_to_id = torch.randperm(VOCAB - 1, generator=gen)
        self.token_p = zipf(VOCAB - 1, 1.07)
        word = torch.rand(n_features, generator=gen) < 0.8
        n_own = (1 + torch.poisson(torch.full((n_features,), 2.0), generator=gen)).clamp(max=8)
        n_own = torch.where(word, n_own, torch.zeros_like(n_own)).long()
        owner = torch.repeat_interleave(torch.arange(n_features), n_own)
        ranks = torch.multinomial(zipf(VOCAB - 1, 0.6), len(owner), replacement=True,
                                  generator=gen)
        owned = self.rank_to_id[ranks]
        order = torch.argsort(owned)
        self.own_tok, self.own_feat = owned[order], owner[order]
        self.share = 0.2 + 0.8 * torch.rand(n_features, generator=gen)
        self.salt = torch.randint(0, 1 << 40, (n_features,), generator=gen)
        rate = torch.exp(torch.empty(n_features).uniform_(
            float(torch.log(torch.tensor(1e-5))), float(torch.log(torch.tensor(3e-3))),
            generator=gen))
        self.rate = torch.where(word, torch.zeros_like(rate), rate)

    def block(self, n_ctx: int, first: int, gen: torch.Generator
              ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """`n_ctx` contexts: their tokens, locations [nnz, 3] and activations."""
        ranks = torch.multinomial(self.token_p, n_ctx * (CTX - 1), replacement=True,
                                  generator=gen)
        toks = torch.cat([torch.full((n_ctx, 1), BOS), self.rank_to_id[ranks].view(n_ctx, -1)],
                         1)
        flat = toks.flatten()
        lo = torch.searchsorted(self.own_tok, flat)
        n = torch.searchsorted(self.own_tok, flat, right=True) - lo
        pos = torch.repeat_interleave(torch.arange(len(flat)), n)
        starts = torch.cumsum(n, 0) - n
        feat = self.own_feat[torch.repeat_interleave(lo, n) + torch.arange(int(n.sum()))
                             - torch.repeat_interleave(starts, n)]
        # A word feature fires in its share of the contexts (gated per context and feature).
        ctx = pos // CTX + first
        gate = ((ctx * 0x9E3779B1 + self.salt[feat]) % 1_000_003).double() / 1_000_003
        keep = gate < self.share[feat]
        pos, feat = pos[keep], feat[keep]
        counts = torch.poisson(self.rate * len(flat), generator=gen).long()
        rfeat = torch.repeat_interleave(torch.arange(len(self.rate)), counts)
        rpos = torch.randint(1, len(flat), (len(rfeat),), generator=gen)
        pos, feat = torch.cat([pos, rpos]), torch.cat([feat, rfeat])
        code = torch.unique(pos * len(self.rate) + feat)  # one activation per (token, feature)
        pos, feat = code // len(self.rate), code % len(self.rate)
        pos_in = pos % CTX
        keep = pos_in != 0  # BOS never fires
        loc = torch.stack([pos[keep] // CTX, pos_in[keep], feat[keep]], 1)
        vals = torch.empty(len(loc)).exponential_(generator=gen) + 0.1
        return toks.tolist(), loc, vals


def write_cache(directory: Path, n_tokens: int, n_features: int, seed: int) -> ActivationCache:
    gen = torch.Generator().manual_seed(seed)
    world = World(n_features, gen)
    w = ShardWriter(directory, 1 << 18)
    per_block = (1 << 18) // CTX
    n_ctx = n_tokens // CTX
    for first in range(0, n_ctx, per_block):
        contexts, loc, vals = world.block(min(per_block, n_ctx - first), first, gen)
        w.add(contexts, loc, vals)
    w.flush()
    meta = {"format_version": CACHE_FORMAT_VERSION, "complete": True, "features": None,
            "d_sae": n_features, "special_token_ids": [BOS], "n_contexts": w.n_contexts,
            "n_tokens": w.n_tokens, "nnz": w.nnz, "shards": w.shards, "context_size": CTX,
            "prepend_bos": True}
    (directory / META_FILENAME).write_text(json.dumps(meta))
    return ActivationCache.open(directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=16_384)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = write_cache(Path(tmp), args.tokens, args.features, args.seed)
        made = time.perf_counter() - t0
        feats = list(range(args.features))
        times: dict[int, list[float]] = {0: [], 20: []}
        picked = 0
        for _ in range(args.repeats):
            for n in (0, 20):
                t0 = time.perf_counter()
                sels, _ = select_examples(cache, feats, ExampleConfig(n_contrast=n),
                                          progress=False)
                times[n].append(time.perf_counter() - t0)
                if n:
                    picked = sum(len(s.contrast) for s in sels.values())
                del sels
    base, with_c = statistics.median(times[0]), statistics.median(times[20])
    print(f"synthetic cache: {cache.n_tokens} tokens, {cache.n_shards} shards, {args.features} "
          f"features, {cache.meta['nnz']} nonzero activations "
          f"({cache.meta['nnz'] / cache.n_tokens:.1f} per token), written in {made:.0f} s; "
          f"torch threads {torch.get_num_threads()}")
    print(f"contrast picks kept: {picked} ({picked / args.features:.1f} per feature)")
    print(f"| select_examples | seconds (median of {args.repeats}) |")
    print("|---|---|")
    print(f"| n_contrast=0 | {base:.1f} |")
    print(f"| n_contrast=20 (default) | {with_c:.1f} |")
    print(f"with contrasts / without: {with_c / base:.2f}x")
    print(f"machine: {os.cpu_count()} CPU cores, shared with other jobs (load average "
          f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after); the two settings "
          "alternate, so both see the same load")


if __name__ == "__main__":
    main()
