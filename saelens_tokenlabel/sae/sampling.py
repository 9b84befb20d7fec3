"""Seeded sampling over the activation cache that does not depend on how it is sharded.

Every random pick of the example stages (`examples`, `contrasts`) takes the tokens with the
smallest keys, and a key is a hash of (context, position, salt): the same token gets the same
key whatever shard it is read from and whichever other features are selected with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int

from .cache import Shard


def flat_positions(shard: Shard) -> tuple[Int[torch.Tensor, " n"], Int[torch.Tensor, " n"]]:
    """Context (in shard) and position of every token of the shard."""
    lengths = shard.lengths()
    ctx = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    pos = torch.arange(len(shard.tokens)) - shard.offsets[:-1][ctx]
    return ctx, pos


def special_mask(tokens: torch.Tensor, special: Sequence[int]) -> Bool[torch.Tensor, " n"]:
    """Where `tokens` holds one of the `special` ids (BOS, padding, ...)."""
    if not special:
        return torch.zeros(len(tokens), dtype=torch.bool)
    return torch.isin(tokens.long(), torch.tensor(sorted(special), dtype=torch.long))


def _s64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _s64(0x9E3779B97F4A7C15), _s64(0xBF58476D1CE4E5B9), _s64(0x94D049BB133111EB)
_SALT = _s64(0x2545F4914F6CDD1D)


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    return (z >> k) & ((1 << (64 - k)) - 1)  # logical shift on int64


def hash_keys(ctx: torch.Tensor, pos: torch.Tensor, salt: int | torch.Tensor
              ) -> Float[torch.Tensor, " n"]:
    """Uniform keys in [0, 1) from (context, position, salt) by splitmix64: the same token
    gets the same key however the cache is sharded, so sampling by smallest keys does not
    depend on shard boundaries or on which other features are requested. `salt`: one
    non-negative int for all, or one per token (int64 arithmetic wraps as the int's does
    modulo 2**64, so both give the same keys)."""
    mixed = (salt.long() * _SALT if isinstance(salt, torch.Tensor)
             else _s64((salt * 0x2545F4914F6CDD1D) % (1 << 64)))
    z = ctx.long() * 0x100000 + pos.long() + mixed
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    z = z ^ _shr(z, 31)
    return _shr(z, 11).double() / float(1 << 53)


def keep_smallest(keys: torch.Tensor, k: int, *cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The `k` smallest keys, with the same rows of `cols`."""
    if len(keys) <= k:
        return (keys, *cols)
    idx = torch.topk(keys, k, largest=False).indices
    return (keys[idx], *(c[idx] for c in cols))


def smallest_per_group(group: Int[torch.Tensor, " n"], keys: Float[torch.Tensor, " n"],
                       cap: Int[torch.Tensor, " g"]) -> Int[torch.Tensor, " m"]:
    """Indices of the rows with the ``cap[g]`` smallest keys of each group g, ordered by
    group, then key (ties: the earlier row)."""
    if not len(keys):
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(keys, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    g = group[order]
    _, counts = torch.unique_consecutive(g, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(g)) - torch.repeat_interleave(starts, counts)
    return order[rank < cap[g]]
