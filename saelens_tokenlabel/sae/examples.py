"""Stage 2: which tokens of the cache become a feature's examples.

Two streaming passes over the shards, each holding one shard at a time:

1. per feature: the top activating tokens, a uniform reservoir of activating tokens (for the
   quantile-spread examples, and the token ids the contrasts are allocated over) and the
   activation count and maximum; for all features together: a uniform pool of random tokens
   (the smallest random keys over the whole corpus).
2. the feature's activations in the contexts chosen in pass 1, and every feature's
   activations around the random-pool tokens, so that a word's activation can be taken over
   its whole span (merged byte fragments) and inactive tokens can be told from active ones;
   and the same-word contrasts: silent occurrences of the token ids the feature fires on
   (`contrasts.py`).

Special tokens (BOS, padding, ...) never become examples. What is held is bounded by the
example counts, never by the corpus size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .cache import ActivationCache, Shard
from .config import ExampleConfig
from .contrasts import ContrastFinder, Pick, allocate
from .sampling import flat_positions as _flat_positions
from .sampling import hash_keys
from .sampling import keep_smallest as _keep_smallest
from .sampling import special_mask as _special_mask

Entry = tuple[int, int, float]
"""(global context, position, activation)."""


@dataclass
class Selection:
    """One feature's activating picks and what is known about it."""

    feature: int
    n_active: int = 0
    """Activating (non-special) tokens in the corpus."""
    max_activation: float = 0.0
    top: list[Entry] = field(default_factory=list)
    """The highest activations, highest first."""
    quantile: list[Entry] = field(default_factory=list)
    """Activating tokens spread evenly over the activation quantiles (lowest bin first)."""
    context_acts: dict[int, dict[int, float]] = field(default_factory=dict)
    """The feature's nonzero activations (position -> value) in each chosen context (in a
    contrast's context: those within `ExampleConfig.max_merge` positions of it)."""
    contrast_quota: dict[int, int] = field(default_factory=dict)
    """Contrast examples wanted per token id the feature fires on (`contrasts.allocate`),
    largest first."""
    contrast: list[Pick] = field(default_factory=list)
    """Silent occurrences of those token ids, (context, position, token id): by token id in
    `contrast_quota`'s order, then distinct contexts first, in seeded random order."""
    n_nonfinite: int = 0
    """Tokens where `sae.encode` gave NaN or inf for this feature (kept out of the cache)."""

    @property
    def dead(self) -> bool:
        """Never fires, and never gave NaN/inf (which is no evidence of silence)."""
        return self.n_active == 0 and self.n_nonfinite == 0

    def status(self, n_tokens: int) -> tuple[str, str] | None:
        """``(status, message)`` when the feature cannot be labeled from its activations:
        ``nonfinite`` (some were NaN/inf: labeling from the rest could mislead) or ``dead``;
        None when it can."""
        if self.n_nonfinite:
            return "nonfinite", (
                f"Feature {self.feature}: sae.encode gave NaN/inf on {self.n_nonfinite} of "
                f"{n_tokens} tokens, so its activations cannot be trusted. Check the SAE's "
                f"weights for this feature (W_enc[:, {self.feature}], b_enc, threshold) and "
                "its input dtype.")
        if self.n_active == 0:
            return "dead", f"Feature {self.feature} never fires on the corpus ({n_tokens} tokens)."
        return None


@dataclass
class RandomPool:
    """Tokens drawn uniformly from the corpus (shared by all features), with every
    requested feature's activations around them."""

    tokens: list[tuple[int, int]] = field(default_factory=list)
    """(global context, position), in draw order."""
    acts: dict[int, dict[int, dict[int, float]]] = field(default_factory=dict)
    """context -> position -> feature -> activation, near the pool's tokens."""
    n_tokens: int = 0
    """Non-special tokens in the corpus (what feature frequencies are counted over)."""

    def activation(self, feature: int, context: int, start: int, end: int) -> float:
        """Largest activation of `feature` over positions [start, end) of a pool context."""
        ctx = self.acts.get(context, {})
        return max((ctx.get(p, {}).get(feature, 0.0) for p in range(start, end)), default=0.0)


@dataclass
class _State:
    top_val: torch.Tensor
    top_ctx: torch.Tensor
    top_pos: torch.Tensor
    res_key: torch.Tensor
    res_val: torch.Tensor
    res_ctx: torch.Tensor
    res_pos: torch.Tensor
    res_tok: torch.Tensor
    count: int = 0
    peak: float = 0.0
    nonfinite: int = 0


def _empty_state() -> _State:
    f, i = torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return _State(f, i, i, torch.zeros(0, dtype=torch.float64), f, i, i, i)


class _Pass1:
    def __init__(self, features: list[int], cfg: ExampleConfig, special: set[int]) -> None:
        self.cfg = cfg
        self.special = sorted(special)
        self.states = {f: _empty_state() for f in features}
        self.feat_t = torch.tensor(features, dtype=torch.long)
        # Spare random tokens: some will be active for a feature, some blank words.
        self.pool_size = max(1, 4 * cfg.n_random)
        self.n_tokens = 0
        self.pool = (torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long),
                     torch.zeros(0, dtype=torch.long))

    def update(self, shard: Shard) -> None:
        special = _special_mask(shard.tokens, self.special)
        self.n_tokens += int((~special).sum())
        flat_ctx, flat_pos = _flat_positions(shard)
        # Random pool: uniform keys over every non-special token of the corpus.
        gctx = flat_ctx + shard.first_context
        keys = hash_keys(gctx, flat_pos, self.cfg.seed)
        keys[special] = 2.0
        k, c, p = _keep_smallest(keys, self.pool_size, gctx, flat_pos)
        keep = k <= 1.0
        pk, pc, pp = _keep_smallest(torch.cat([self.pool[0], k[keep]]), self.pool_size,
                                    torch.cat([self.pool[1], c[keep]]),
                                    torch.cat([self.pool[2], p[keep]]))
        self.pool = (pk, pc, pp)

        loc = shard.locations.long()
        val = shard.activations
        flat = shard.offsets[loc[:, 0]] + loc[:, 1]
        wanted = ~special[flat] & torch.isin(loc[:, 2], self.feat_t)
        # Caches from before non-finite values were kept out may still hold some.
        bad = wanted & ~torch.isfinite(val)
        if bool(bad.any()):
            for f, n in zip(*torch.unique(loc[bad, 2], return_counts=True), strict=True):
                self.states[int(f)].nonfinite += int(n)
        m = wanted & torch.isfinite(val) & (val > 0)
        loc, val, tok = loc[m], val[m], shard.tokens[flat[m]].long()
        order = torch.argsort(loc[:, 2], stable=True)
        loc, val, tok = loc[order], val[order], tok[order]
        feats, counts = torch.unique_consecutive(loc[:, 2], return_counts=True)
        start = 0
        for f, n in zip(feats.tolist(), counts.tolist(), strict=True):
            sl = slice(start, start + n)
            start += n
            ctx = loc[sl, 0] + shard.first_context
            keys = hash_keys(ctx, loc[sl, 1], self.cfg.seed * 1_000_003 + f + 1)
            self._update_feature(self.states[f], val[sl], ctx, loc[sl, 1], tok[sl], keys)

    def _update_feature(self, s: _State, val: torch.Tensor, ctx: torch.Tensor,
                        pos: torch.Tensor, tok: torch.Tensor, keys: torch.Tensor) -> None:
        s.count += len(val)
        s.peak = max(s.peak, float(val.max()))
        tv, tc, tp = (torch.cat([s.top_val, val]), torch.cat([s.top_ctx, ctx]),
                      torch.cat([s.top_pos, pos]))
        if len(tv) > self.cfg.n_top:
            idx = torch.topk(tv, self.cfg.n_top).indices
            tv, tc, tp = tv[idx], tc[idx], tp[idx]
        s.top_val, s.top_ctx, s.top_pos = tv, tc, tp
        s.res_key, s.res_val, s.res_ctx, s.res_pos, s.res_tok = _keep_smallest(
            torch.cat([s.res_key, keys]), self.cfg.reservoir_size,
            torch.cat([s.res_val, val]), torch.cat([s.res_ctx, ctx]), torch.cat([s.res_pos, pos]),
            torch.cat([s.res_tok, tok]))


def _quantile_picks(s: _State, top: list[Entry], cfg: ExampleConfig, feature: int
                    ) -> list[Entry]:
    # A generator per feature: its picks do not depend on which other features are selected
    # with it, so a resumed run selects only the features it still has to label and gets
    # the examples an uninterrupted run would.
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + feature + 1)
    taken = {(c, p) for c, p, _ in top}
    rest = [(float(v), int(c), int(p)) for v, c, p in
            zip(s.res_val.tolist(), s.res_ctx.tolist(), s.res_pos.tolist(), strict=True)
            if (int(c), int(p)) not in taken]
    if not rest or cfg.n_quantile == 0:
        return []
    rest.sort()
    bins = [b for b in torch.tensor_split(torch.arange(len(rest)), cfg.n_quantile_bins)
            if len(b)]
    share = [cfg.n_quantile // len(bins) + (i < cfg.n_quantile % len(bins))
             for i in range(len(bins))]
    out: list[Entry] = []
    for b, k in zip(bins, share, strict=True):
        pick = b[torch.randperm(len(b), generator=gen)[:k]]
        out.extend((rest[i][1], rest[i][2], rest[i][0]) for i in sorted(pick.tolist()))
    return out


def select_examples(
    cache: ActivationCache, features: Sequence[int], cfg: ExampleConfig,
    progress: bool | None = None,
) -> tuple[dict[int, Selection], RandomPool]:
    """Pick each feature's activating tokens and the shared random pool (module docstring)."""
    features = [int(f) for f in features]
    if cache.features is not None:
        missing = sorted(set(features) - set(cache.features))
        if missing:
            raise KeyError(f"features {missing[:10]} are not in the activation cache "
                           f"{cache.directory}")
    disable = None if progress is None else not progress
    p1 = _Pass1(features, cfg, cache.special_ids)
    for shard in tqdm(cache.shards(), total=cache.n_shards, desc="examples (1/2)", unit="shard",
                      disable=disable):
        p1.update(shard)

    nonfinite = {int(f): int(n) for f, n in cache.meta.get("nonfinite", {}).items()}
    sels: dict[int, Selection] = {}
    for f, s in p1.states.items():
        order = torch.argsort(s.top_val, descending=True, stable=True)
        top = [(int(s.top_ctx[i]), int(s.top_pos[i]), float(s.top_val[i])) for i in order]
        sels[f] = Selection(f, s.count, s.peak, top, _quantile_picks(s, top, cfg, f),
                            contrast_quota=allocate(s.res_tok, cfg.n_contrast),
                            n_nonfinite=nonfinite.get(f, 0) + s.nonfinite)
    pool_order = torch.argsort(p1.pool[0], stable=True)
    pool = RandomPool([(int(p1.pool[1][i]), int(p1.pool[2][i])) for i in pool_order],
                      n_tokens=p1.n_tokens)

    finder = ContrastFinder({f: s.contrast_quota for f, s in sels.items()},
                            int(cache.meta["d_sae"]), cfg.seed, cfg.max_merge, cache.special_ids)
    _pass2(cache, sels, pool, finder, disable)
    picks, near = finder.picks()
    for f, sel in sels.items():
        sel.contrast = picks.get(f, [])
        for c, acts in near.get(f, {}).items():
            sel.context_acts.setdefault(c, {}).update(acts)
    return sels, pool


def _pass2(cache: ActivationCache, sels: dict[int, Selection], pool: RandomPool,
           contrasts: ContrastFinder, disable: bool | None) -> None:
    """Fill `Selection.context_acts` and `RandomPool.acts`, and find the contrasts, in one
    more pass."""
    reach = contrasts.reach
    d = int(cache.meta["d_sae"])
    wanted: dict[int, Selection] = {}
    pair_keys = []
    for f, s in sels.items():
        for c, _, _ in s.top + s.quantile:
            pair_keys.append(c * d + f)
        wanted[f] = s
    pairs = torch.tensor(sorted(set(pair_keys)), dtype=torch.long)
    near = torch.tensor(sorted({c * (1 << 20) + p + o for c, p in pool.tokens
                                for o in range(-reach, reach + 1)}), dtype=torch.long)
    feats = torch.tensor(sorted(sels), dtype=torch.long)
    pool_ctx = {c for c, _ in pool.tokens}
    for shard in tqdm(cache.shards(), total=cache.n_shards, desc="examples (2/2)",
                      unit="shard", disable=disable):
        contrasts.update(shard)
        loc = shard.locations.long()
        gctx = loc[:, 0] + shard.first_context
        val = shard.activations
        m = torch.isin(gctx * d + loc[:, 2], pairs)
        for c, p, f, v in zip(gctx[m].tolist(), loc[m, 1].tolist(), loc[m, 2].tolist(),
                              val[m].tolist(), strict=True):
            wanted[f].context_acts.setdefault(c, {})[p] = v
        if not pool_ctx:
            continue
        m = torch.isin(gctx * (1 << 20) + loc[:, 1], near) & torch.isin(loc[:, 2], feats)
        for c, p, f, v in zip(gctx[m].tolist(), loc[m, 1].tolist(), loc[m, 2].tolist(),
                              val[m].tolist(), strict=True):
            pool.acts.setdefault(c, {}).setdefault(p, {})[f] = v
