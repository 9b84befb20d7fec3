"""Same-word contrasts: a feature's own words, where they occur and it is silent.

Most SAE features fire on a token, or a family of tokens, in some contexts and not others. The
examples that tell such a feature's label from a broader one ("livestock" from "animal" for a
feature that fires on "lamb" among farm animals and not in recipes) are its active words where
it does not fire; random tokens almost never hit them. So each feature gets its own quota of
them (`ExampleConfig.n_contrast`), found in the activation cache without running the subject
model again (the cache keeps the token ids):

1. `allocate` spreads the quota over the token ids the feature fires on, in proportion to how
   often it fires on each (counted on the uniform reservoir of its activating tokens that
   pass 1 of `examples` keeps, so exactly when it fires at most `reservoir_size` times): a
   stray firing on " the" gets no share.
2. `ContrastFinder`, in the second streaming pass, finds the occurrences of those ids where
   the feature is silent (special tokens never), and keeps per (feature, token id) those with
   the smallest per-feature keys (from `sampling.hash_keys`), an occurrence in a context not
   yet represented first: the picks are spread over distinct contexts and do not depend on
   sharding or on which other features are selected. It also keeps the feature's
   activations next to each pick, so that rendering can check that the feature is silent
   over the pick's whole word (merged byte fragments, `words.py`).

Vectorised per shard, and read in each feature's key order only as far as its picks need
(`ContrastFinder`), so the work does not grow as features x occurrences of a common word.
What is held is bounded by the quotas (at most ``2 q + 2`` picks per token id of quota q, and
their neighbours' activations), never by the corpus.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float, Int

from .cache import Shard
from .sampling import flat_positions, hash_keys, smallest_per_group, special_mask

Pick = tuple[int, int, int]
"""(global context, position, token id) of a silent occurrence."""
FIRST_WINDOW = 2
"""Occurrences a pair scans first in a shard, per pick it may keep; the window grows
`GROWTH`-fold while it finds too few silent ones in distinct contexts."""
GROWTH = 4
_BITS = 40
_SPAN = 1 << _BITS


def allocate(tokens: Int[torch.Tensor, " n"], total: int) -> dict[int, int]:
    """`total` picks over the token ids in proportion to how often each occurs in `tokens`
    (largest remainders; ties: the more frequent id, then the smaller). Ids given none are
    left out; the dict is in order of quota, largest first."""
    if total <= 0 or not len(tokens):
        return {}
    ids, counts = torch.unique(tokens.long(), return_counts=True)
    n = int(counts.sum())
    quota = (counts * total // n).tolist()
    rem, cnt, tid = (counts * total % n).tolist(), counts.tolist(), ids.tolist()
    order = sorted(range(len(tid)), key=lambda i: (-rem[i], -cnt[i], tid[i]))
    for i in order[: total - sum(quota)]:
        quota[i] += 1
    ranked = sorted(range(len(tid)), key=lambda i: (-quota[i], -cnt[i], tid[i]))
    return {tid[i]: quota[i] for i in ranked if quota[i] > 0}


def int_keys(ctx: torch.Tensor, pos: torch.Tensor, salt: int | torch.Tensor
             ) -> Int[torch.Tensor, " n"]:
    """`sampling.hash_keys` as 40-bit integers (exact: a key is a 53-bit integer over
    2**53)."""
    return (hash_keys(ctx, pos, salt) * _SPAN).long()


def _lookup(codes: Int[torch.Tensor, " k"], query: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether each query code is among the sorted `codes`, and where. The queries are
    sorted first: a binary search that walks the codes in order is several times faster
    than one that jumps about."""
    if not len(codes) or not query.numel():
        return torch.zeros(query.shape, dtype=torch.bool), torch.zeros(query.shape,
                                                                        dtype=torch.long)
    q, order = torch.sort(query.reshape(-1))
    at = torch.searchsorted(codes, q).clamp(max=len(codes) - 1)
    found, idx = torch.empty(len(q), dtype=torch.bool), torch.empty(len(q), dtype=torch.long)
    found[order], idx[order] = codes[at] == q, at
    return found.reshape(query.shape), idx.reshape(query.shape)


def _ranges(start: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each i, the integers start[i] .. start[i] + length[i] - 1: (i, value) rows."""
    i = torch.repeat_interleave(torch.arange(len(length)), length)
    first = torch.cumsum(length, 0) - length
    return i, start[i] + torch.arange(len(i)) - first[i]


class ContrastFinder:
    """Silent occurrences of each feature's allocated token ids (module docstring), found
    one shard at a time in the second pass of `examples.select_examples`.

    Keys: every occurrence has one shared 40-bit key U; a feature's key of it is U minus the
    feature's phase, modulo 2**40 (a rotation: uniform, and different for each feature).
    Within a shard a token's occurrences are sorted by U once, so each (feature, token) pair
    reads its occurrences in its own key order from its phase on, and stops as soon as it
    holds as many silent ones in distinct contexts as it may keep: the work is that of the
    picks, not of (features x occurrences). Ties go to the earlier position."""

    def __init__(self, quotas: Mapping[int, Mapping[int, int]], d_sae: int, seed: int,
                 reach: int, special: set[int]) -> None:
        # Pairs in (feature, allocation) order: the kept rows come out in that order.
        pairs = [(f, t, q) for f in sorted(quotas) for t, q in quotas[f].items()]
        self.feat = torch.tensor([f for f, _, _ in pairs], dtype=torch.long)
        self.tok = torch.tensor([t for _, t, _ in pairs], dtype=torch.long)
        self.cap = torch.tensor([2 * q + 2 for _, _, q in pairs], dtype=torch.long)
        self.phase = int_keys(self.feat, torch.zeros_like(self.feat),
                              seed * 1_000_003 + (1 << 34))
        self.salt = seed * 1_000_003 + (1 << 33)
        self.wanted = torch.unique(self.tok)
        self.rank = torch.searchsorted(self.wanted, self.tok)
        self.d, self.reach, self.special = d_sae, reach, sorted(special)
        i64 = torch.zeros(0, dtype=torch.long)
        self.kept = {"key": i64, "pair": i64, "ctx": i64, "pos": i64, "uid": i64}
        """Picks so far, by pair then key (distinct contexts first: key + 2**40 after)."""
        self.near = {"uid": i64, "pos": i64, "val": torch.zeros(0)}
        """The feature's nonzero activations next to each kept pick."""
        self.next_uid = 0

    def update(self, shard: Shard) -> None:
        """Fold one shard's silent occurrences into the picks kept so far."""
        if not len(self.feat):
            return
        tokens = shard.tokens.long()
        occ = torch.nonzero(torch.isin(tokens, self.wanted)
                            & ~special_mask(tokens, self.special)).flatten()
        if not len(occ):
            return
        ctx, pos = flat_positions(shard)
        u = int_keys(ctx[occ] + shard.first_context, pos[occ], self.salt)
        order = torch.argsort(u, stable=True)
        order = order[torch.argsort(tokens[occ][order], stable=True)]
        occ, u = occ[order], u[order]
        codes, vals = self._firing(shard)
        key, pair, flat = self._scan(occ, u, tokens[occ], (codes, vals), ctx)
        first_uid = self.next_uid
        self.next_uid += len(key)
        rows = {"key": key, "pair": pair, "ctx": ctx[flat] + shard.first_context,
                "pos": pos[flat], "uid": torch.arange(first_uid, self.next_uid)}
        merged = {k: torch.cat([v, rows[k]]) for k, v in self.kept.items()}
        keep = smallest_per_group(merged["pair"], merged["key"], self.cap)
        self.kept = {k: v[keep] for k, v in merged.items()}
        self._note_neighbours(shard, codes, vals, first_uid)

    def _firing(self, shard: Shard) -> tuple[Int[torch.Tensor, " k"], Float[torch.Tensor, " k"]]:
        """The shard's activations as sorted codes (flat index * d_sae + feature) and their
        values. A cache written by `activations.py` is in that order already (token, then
        feature), so usually nothing is sorted."""
        loc = shard.locations.long()
        code = (shard.offsets[loc[:, 0]] + loc[:, 1]) * self.d + loc[:, 2]
        val = shard.activations
        if len(code) > 1 and not bool((code[1:] >= code[:-1]).all()):
            order = torch.argsort(code)
            code, val = code[order], val[order]
        return code, val

    @staticmethod
    def _fires(codes: torch.Tensor, vals: torch.Tensor, query: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the query codes are not silent (a positive, or a NaN/inf, activation), and
        the index of their values."""
        found, idx = _lookup(codes, query)
        return found & ~(vals[idx] <= 0) if len(vals) else found, idx

    def _scan(self, occ: torch.Tensor, u: torch.Tensor, tok: torch.Tensor,
              acts: tuple[torch.Tensor, torch.Tensor], ctx: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each pair's silent occurrences in this shard, read in its key order until it holds
        `cap` distinct contexts (or none are left), reduced to its `cap` smallest keys, a
        context's first occurrence before any second one. `occ` (flat indices) is sorted by
        token, then U. Returns each kept row's key, pair and flat index."""
        start = torch.searchsorted(tok, self.tok)
        n = torch.searchsorted(tok, self.tok, right=True) - start
        live = torch.nonzero(n > 0).flatten()
        start, n = start[live], n[live]
        comb = torch.searchsorted(self.wanted, tok) * _SPAN + u
        rot = torch.searchsorted(comb, self.rank[live] * _SPAN + self.phase[live]) - start
        done = torch.zeros(len(live), dtype=torch.long)
        width, cap = FIRST_WINDOW * self.cap[live], self.cap[live]
        n_ctx = int(ctx.max()) + 1
        none = torch.zeros(0, dtype=torch.long)
        got: list[tuple[torch.Tensor, torch.Tensor]] = [(none, none)]
        todo, seen = torch.arange(len(live)), none
        while len(todo):
            take = torch.minimum(width[todo], n[todo] - done[todo])
            i, j = _ranges(done[todo], take)
            i = todo[i]
            el = start[i] + (rot[i] + j) % n[i]
            firing, _ = self._fires(*acts, occ[el] * self.d + self.feat[live[i]])
            i, el = i[~firing], el[~firing]
            got.append((i, el))
            done[todo] += take
            # (pair, context) of the silent ones so far, of the pairs still reading only.
            seen = torch.unique(torch.cat([seen, i * n_ctx + ctx[occ[el]]]))
            distinct = torch.bincount(seen // n_ctx, minlength=len(live))
            todo = todo[(distinct[todo] < cap[todo]) & (done[todo] < n[todo])]
            seen = seen[torch.isin(seen // n_ctx, todo)]
            width[todo] *= GROWTH
        i, el = (torch.cat(x) for x in zip(*got, strict=True))
        pair = live[i]
        key = (u[el] - self.phase[pair]) % _SPAN
        group = pair * n_ctx + ctx[occ[el]]
        order = torch.argsort(key, stable=True)
        order = order[torch.argsort(group[order], stable=True)]
        later = torch.zeros(len(order), dtype=torch.bool)
        later[1:] = group[order][1:] == group[order][:-1]
        key[order] += later.long() * _SPAN
        keep = smallest_per_group(pair, key, self.cap)
        return key[keep], pair[keep], occ[el][keep]

    def _note_neighbours(self, shard: Shard, codes: torch.Tensor, vals: torch.Tensor,
                         first_uid: int) -> None:
        """Keep the feature's activations within `reach` of this shard's new picks (a word
        spans at most that far), and drop those of evicted picks."""
        k = self.kept
        new = k["uid"] >= first_uid
        ctx = k["ctx"][new] - shard.first_context
        offs = torch.arange(-self.reach, self.reach + 1)
        q = k["pos"][new][:, None] + offs[None]
        ok = (q >= 0) & (q < shard.lengths()[ctx][:, None])
        flat = shard.offsets[ctx][:, None] + q.clamp(min=0)
        found, idx = self._fires(codes, vals, flat * self.d + self.feat[k["pair"][new]][:, None])
        found &= ok
        uid = k["uid"][new][:, None].expand_as(q)
        near = {"uid": uid[found], "pos": q[found], "val": vals[idx[found]]}
        both = {n: torch.cat([self.near[n], v]) for n, v in near.items()}
        alive = torch.isin(both["uid"], k["uid"])
        self.near = {n: v[alive] for n, v in both.items()}

    def picks(self) -> tuple[dict[int, list[Pick]], dict[int, dict[int, dict[int, float]]]]:
        """Per feature: its picks (by token id in allocation order, then key), and its
        activations next to them (context -> position -> value)."""
        k = self.kept
        feat, tok = self.feat.tolist(), self.tok.tolist()
        out: dict[int, list[Pick]] = {}
        where: dict[int, tuple[int, int]] = {}
        for u, p, c, q in zip(k["uid"].tolist(), k["pair"].tolist(), k["ctx"].tolist(),
                              k["pos"].tolist(), strict=True):
            out.setdefault(feat[p], []).append((c, q, tok[p]))
            where[u] = (feat[p], c)
        acts: dict[int, dict[int, dict[int, float]]] = {}
        for u, q, v in zip(*(self.near[n].tolist() for n in ("uid", "pos", "val")),
                           strict=True):
            f, c = where[u]
            acts.setdefault(f, {}).setdefault(c, {})[q] = v
        return out, acts
