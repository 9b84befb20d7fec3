"""The on-disk activation cache: sparse SAE activations of chosen features, with token ids.

Layout (as EleutherAI delphi's cache, ``locations`` + ``activations`` in safetensors)::

    <root>/<run key>/<features key>/
        meta.json                      what was run, shard index, totals
        shard_00000.safetensors        tokens [n_tok] int32, offsets [n_ctx + 1] int64,
                                       locations [nnz, 3] int32 (context in shard, position,
                                       feature), activations [nnz] float32

The run key hashes model, tokenizer, SAE, corpus and settings; the features key names the
features kept ("all", or a hash of the list). A cache with a superset of the features serves
a later run. Caches appear atomically (written under a temporary name, then renamed), so a
crashed run never leaves one that looks complete.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from ..records.errors import CacheDamagedError
from .fingerprint import CACHE_FORMAT_VERSION, digest

META_FILENAME = "meta.json"
SHARD_FILENAME = "shard_{:05d}.safetensors"


def features_key(features: Sequence[int] | None) -> str:
    return "all" if features is None else "f" + digest(sorted(features), size=8)


@dataclass
class Shard:
    """One shard, fully loaded (its size is bounded by `CacheConfig.shard_tokens`)."""

    first_context: int
    """Global index of the shard's first context."""
    offsets: Int[torch.Tensor, " n_ctx_plus_1"]
    """Context i holds ``tokens[offsets[i]:offsets[i+1]]``."""
    tokens: Int[torch.Tensor, " n_tok"]
    locations: Int[torch.Tensor, "nnz 3"]
    """(context within the shard, position, feature index) of every nonzero activation."""
    activations: Float[torch.Tensor, " nnz"]

    @property
    def n_contexts(self) -> int:
        return len(self.offsets) - 1

    def context(self, i: int) -> list[int]:
        """Token ids of the shard's i-th context."""
        return self.tokens[int(self.offsets[i]) : int(self.offsets[i + 1])].tolist()

    def lengths(self) -> Int[torch.Tensor, " n_ctx"]:
        return self.offsets[1:] - self.offsets[:-1]


class ShardWriter:
    """Buffers contexts and their sparse activations; flushes a shard every `shard_tokens`."""

    def __init__(self, directory: Path, shard_tokens: int) -> None:
        self.directory = directory
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self.n_contexts = 0
        self.n_tokens = 0
        self.nnz = 0
        # Most tokens held at once before a flush: below `shard_tokens` plus one batch,
        # whatever the corpus length (the memory test reads it from meta.json).
        self.peak_tokens = 0
        self._reset()

    def _reset(self) -> None:
        self._tokens: list[list[int]] = []
        self._locs: list[torch.Tensor] = []
        self._vals: list[torch.Tensor] = []
        self._buffered = 0
        self._first = self.n_contexts

    def add(self, contexts: Sequence[Sequence[int]], locations: Int[torch.Tensor, "nnz 3"],
            values: Float[torch.Tensor, " nnz"]) -> None:
        """`locations[:, 0]` indexes `contexts` (a batch); shifted to the shard here."""
        base = self.n_contexts - self._first
        locs = locations.to(torch.int32).clone()
        locs[:, 0] += base
        self._tokens.extend(list(c) for c in contexts)
        self._locs.append(locs)
        self._vals.append(values.to(torch.float32))
        n_tok = sum(len(c) for c in contexts)
        self._buffered += n_tok
        self.peak_tokens = max(self.peak_tokens, self._buffered)
        self.n_contexts += len(contexts)
        self.n_tokens += n_tok
        self.nnz += len(values)
        if self._buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._tokens:
            return
        from safetensors.torch import save_file

        lengths = torch.tensor([len(c) for c in self._tokens], dtype=torch.int64)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        tokens = torch.tensor([t for c in self._tokens for t in c], dtype=torch.int32)
        locs = torch.cat(self._locs) if self._locs else torch.zeros((0, 3), dtype=torch.int32)
        vals = torch.cat(self._vals) if self._vals else torch.zeros(0)
        name = SHARD_FILENAME.format(len(self.shards))
        save_file({"tokens": tokens, "offsets": offsets, "locations": locs.contiguous(),
                   "activations": vals.contiguous()}, str(self.directory / name))
        self.shards.append({"file": name, "first_context": self._first,
                            "n_contexts": len(self._tokens), "n_tokens": int(lengths.sum()),
                            "nnz": len(vals)})
        self._reset()


class ActivationCache:
    """Read access to a finished cache. Shards load one at a time."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.meta = meta
        self._starts = [s["first_context"] for s in meta["shards"]]
        self._readers: dict[int, tuple[Any, list[int]]] = {}
        """Shard -> its file opened for slicing and its context offsets (`contexts`)."""

    @classmethod
    def open(cls, directory: str | Path) -> ActivationCache:
        """The cache in `directory`, its ``meta.json`` and every shard's header checked: a
        file that cannot be read is a `CacheDamagedError` naming it (`shard_problem`)."""
        directory = Path(directory)
        path = directory / META_FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not an activation cache (no "
                                    f"{META_FILENAME}).")
        meta = _read_meta(path)
        if meta.get("format_version") != CACHE_FORMAT_VERSION or not meta.get("complete"):
            raise ValueError(f"{directory} holds an incomplete or older-format cache; delete "
                             "it or pass CacheConfig(overwrite=True).")
        for info in meta["shards"]:
            problem = shard_problem(directory / info["file"])
            if problem is not None:
                raise cache_damaged(directory / info["file"], problem)
        return cls(directory, meta)

    # ------------------------------------------------------------------ totals
    @property
    def features(self) -> list[int] | None:
        """Features kept (None: all of them)."""
        return self.meta["features"]

    @property
    def n_contexts(self) -> int:
        return int(self.meta["n_contexts"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def n_shards(self) -> int:
        return len(self.meta["shards"])

    @property
    def special_ids(self) -> set[int]:
        return set(self.meta["special_token_ids"])

    # ------------------------------------------------------------------ reading
    def shard(self, i: int) -> Shard:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        info = self.meta["shards"][i]
        path = self.directory / info["file"]
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:  # damaged since `open`
            raise cache_damaged(path, f"{type(err).__name__}: {err}") from err
        return Shard(info["first_context"], t["offsets"], t["tokens"], t["locations"],
                     t["activations"])

    def shards(self) -> Iterator[Shard]:
        for i in range(self.n_shards):
            yield self.shard(i)

    def shard_of(self, context: int) -> int:
        if not 0 <= context < self.n_contexts:
            raise IndexError(f"context {context} out of range (0..{self.n_contexts - 1})")
        return bisect.bisect_right(self._starts, context) - 1

    def contexts(self, indices: Sequence[int]) -> dict[int, list[int]]:
        """Token ids of the given (global) contexts. Each context's tokens are sliced out of
        its shard's file (kept open, memory-mapped), so the cost follows the contexts asked
        for, never the shard: a shard's activations, which grow with the SAE, are not read."""
        by_shard: dict[int, list[int]] = {}
        for c in set(int(i) for i in indices):
            by_shard.setdefault(self.shard_of(c), []).append(c)
        out = {}
        for s, ctxs in sorted(by_shard.items()):
            tokens, offsets = self._reader(s)
            first = self.meta["shards"][s]["first_context"]
            for c in ctxs:
                i = c - first
                out[c] = tokens[offsets[i]:offsets[i + 1]].tolist()
        return out

    def _reader(self, i: int) -> tuple[Any, list[int]]:
        """Shard i's tokens (a lazy slice of its file) and context offsets."""
        if i not in self._readers:
            from safetensors import safe_open

            handle = safe_open(str(self.directory / self.meta["shards"][i]["file"]),
                               framework="pt")
            self._readers[i] = (handle.get_slice("tokens"),
                                handle.get_tensor("offsets").tolist())
        return self._readers[i]

    def feature_activations(self, feature: int) -> tuple[
        Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"], Float[torch.Tensor, " nnz"]
    ]:
        """All nonzero activations of one feature: (global context, position, value)."""
        if self.features is not None and feature not in self.features:
            raise KeyError(f"feature {feature} is not in this cache")
        ctx, pos, val = [], [], []
        for shard in self.shards():
            m = shard.locations[:, 2] == feature
            ctx.append(shard.locations[m, 0].long() + shard.first_context)
            pos.append(shard.locations[m, 1].long())
            val.append(shard.activations[m])
        return torch.cat(ctx), torch.cat(pos), torch.cat(val)


def cache_damaged(path: Path, problem: str) -> CacheDamagedError:
    """The one line for a file of the cache that cannot be read."""
    err = CacheDamagedError(
        f"The activation cache file {path} cannot be read ({problem}). The cache holds "
        "activations, no labels: rebuild it by rerunning the labeling command with "
        "--overwrite-cache (CacheConfig(overwrite=True)), or delete "
        f"{path.parent} and run it again.")
    err.path, err.problem = path, problem
    return err


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise cache_damaged(path, f"not JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("shards"), list):
        raise cache_damaged(path, "not a cache's meta.json: no shard list")
    return meta


def shard_problem(path: Path) -> str | None:
    """Why the shard at `path` cannot load, or None: missing, or not as long as its
    safetensors header says (a truncated copy, a disk that filled up). Reads the header
    only, so opening a cache stays cheap."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 <= n <= size - 8:
                return f"truncated: {size} bytes, too short for its header"
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except FileNotFoundError:
        return "the file is missing"
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        return f"its header does not parse: {err}"
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"truncated: {size} bytes, its header needs {need}"
    if size > need:
        return f"{size} bytes, longer than the {need} its header says"
    return None


def find_cache(run_dir: Path, features: Sequence[int] | None) -> Path | None:
    """A finished cache under `run_dir` that holds every requested feature, smallest first."""
    exact = run_dir / features_key(features)
    if (exact / META_FILENAME).is_file():
        return exact
    if not run_dir.is_dir():
        return None
    wanted = None if features is None else set(features)
    best: tuple[int, Path] | None = None
    for meta_path in run_dir.glob(f"*/{META_FILENAME}"):
        if ".tmp-" in meta_path.parent.name:
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not meta.get("complete") or meta.get("format_version") != CACHE_FORMAT_VERSION:
            continue
        have = meta.get("features")
        if have is None:
            size = 1 << 62
        elif wanted is not None and wanted <= set(have):
            size = len(have)
        else:
            continue
        if best is None or size < best[0]:
            best = (size, meta_path.parent)
    return None if best is None else best[1]
