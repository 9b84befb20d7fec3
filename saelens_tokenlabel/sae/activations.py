"""Stage 1: run the subject model and the SAE over a corpus into a sparse on-disk cache.

Memory stays bounded whatever the corpus size: documents stream in, one batch of contexts
runs at a time, `sae.encode` sees at most `encode_batch_tokens` tokens per call, only the
nonzero activations of the requested features are kept, and shards go to disk every
`shard_tokens` tokens. No ``[tokens x d_sae]`` array ever exists beyond one encode call.

Short documents: a document is cut into contexts of `context_size` tokens (BOS included) and
never packed together with the next one, so a document shorter than the context, or a whole
corpus shorter than one context, gives shorter contexts. Nothing is padded into the cache,
and a token's activation never depends on which document happens to precede it.

Non-finite values: NaN or inf at the hook (the subject model overflowing in its dtype) stops
the run with `NonFiniteActivationError` at the first batch. NaN or inf out of `sae.encode` is
the SAE's problem for some features only: those values are kept out of the cache and counted
per feature (``meta["nonfinite"]``), so those features get the status ``nonfinite`` while
the others are labeled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from .cache import META_FILENAME, ActivationCache, ShardWriter, features_key, find_cache
from .config import CacheConfig
from .corpus import Corpus, CorpusError
from .fingerprint import CACHE_FORMAT_VERSION, digest, model_fingerprint, sae_fingerprint
from .hooks import HookSpec, run_to_hook, to_sae_input

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

log = logging.getLogger(__name__)
DEFAULT_CONTEXT_SIZE = 128


class NonFiniteActivationError(ValueError):
    """The subject model gives NaN or inf at the SAE's hook. The message says where."""


def resolve_context(model: HookedTransformer, sae: Any, config: CacheConfig
                    ) -> tuple[int, bool, int | None]:
    """Context size, BOS flag and BOS id, from the config, else the SAE's metadata."""
    meta = sae.cfg.metadata
    size = config.context_size or meta.context_size or DEFAULT_CONTEXT_SIZE
    size = min(int(size), int(model.cfg.n_ctx))
    bos = config.prepend_bos if config.prepend_bos is not None else meta.prepend_bos
    bos = True if bos is None else bool(bos)
    bos_id = model.tokenizer.bos_token_id if bos else None
    if bos and bos_id is None:
        raise ValueError(
            "The SAE asks for BOS-prefixed contexts (metadata.prepend_bos) but the subject "
            "tokenizer has no bos_token. Pass CacheConfig(prepend_bos=False) or set "
            "tokenizer.bos_token."
        )
    return size, bos, bos_id


def iter_contexts(
    texts: Iterable[str], tokenizer: Any, context_size: int, bos_id: int | None,
    max_tokens: int | None = None, max_documents: int | None = None,
) -> Iterator[tuple[list[int], int]]:
    """Each document's tokens in chunks of `context_size` (BOS included when `bos_id` is set);
    a document's last chunk (or a whole short document) is a shorter context, never filled up
    with the next document. Yields (context, document tokens it consumed)."""
    room = context_size - (1 if bos_id is not None else 0)
    seen = 0
    for n, text in enumerate(texts):
        if max_documents is not None and n >= max_documents:
            return
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if max_tokens is not None:
            ids = ids[: max_tokens - seen]
        for start in range(0, len(ids), room):
            chunk = ids[start : start + room]
            yield ([bos_id] + chunk if bos_id is not None else chunk), len(chunk)
        seen += len(ids)
        if max_tokens is not None and seen >= max_tokens:
            return


def _batches(items: Iterator[tuple[list[int], int]], size: int
             ) -> Iterator[tuple[list[list[int]], int]]:
    batch: list[list[int]] = []
    consumed = 0
    for ctx, n in items:
        batch.append(ctx)
        consumed += n
        if len(batch) == size:
            yield batch, consumed
            batch, consumed = [], 0
    if batch:
        yield batch, consumed


@torch.no_grad()
def encode_contexts(
    model: HookedTransformer, sae: Any, spec: HookSpec, contexts: Sequence[Sequence[int]],
    context_size: int, features: Int[torch.Tensor, " k"] | None, encode_batch_tokens: int,
    nonfinite: Counter | None = None,
) -> tuple[Int[torch.Tensor, "nnz 3"], Float[torch.Tensor, " nnz"]]:
    """Nonzero SAE activations of a batch: (context in batch, position, feature), value.

    NaN/inf SAE activations are left out and counted per feature into `nonfinite`; without
    a counter they are an error. NaN/inf at the hook itself is always an error.
    """
    length = max(len(c) for c in contexts)
    pad = model.tokenizer.pad_token_id
    tokens = torch.full((len(contexts), length), 0 if pad is None else int(pad), dtype=torch.long)
    mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for i, c in enumerate(contexts):
        tokens[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[i, : len(c)] = 1
    device = model.W_E.device
    # Right padding: causal attention keeps pad tokens out of every real token's view; the
    # explicit mask stops TransformerLens from guessing padding from token ids.
    act = run_to_hook(model, spec, tokens.to(device), mask.to(device))
    valid = mask.bool() & spec.position_mask(context_size)[:length][None]
    b, p = valid.nonzero(as_tuple=True)
    x = to_sae_input(sae, act[b.to(act.device), p.to(act.device)], spec.hook_name)
    del act
    _check_finite_input(model, x, b, p, tokens, spec.hook_name)
    rows, cols, vals = [], [], []
    for start in range(0, len(x), encode_batch_tokens):
        acts = sae.encode(x[start : start + encode_batch_tokens])
        if acts.is_sparse:
            acts = acts.to_dense()
        if features is not None:
            acts = acts[:, features.to(acts.device)]
        acts = _drop_nonfinite(acts, features, nonfinite)
        r, c = (acts != 0).nonzero(as_tuple=True)
        vals.append(acts[r, c].float().cpu())
        rows.append(r.cpu() + start)
        cols.append(c.cpu())
        del acts
    if not rows:
        return torch.zeros((0, 3), dtype=torch.int32), torch.zeros(0)
    r, c = torch.cat(rows), torch.cat(cols)
    feat = features.cpu()[c] if features is not None else c
    locs = torch.stack([b[r], p[r], feat], dim=1).to(torch.int32)
    return locs, torch.cat(vals)


def _check_finite_input(model: HookedTransformer, x: Float[torch.Tensor, " n *d"],
                        b: Int[torch.Tensor, " n"], p: Int[torch.Tensor, " n"],
                        tokens: Int[torch.Tensor, "batch pos"], hook_name: str) -> None:
    bad = ~torch.isfinite(x).reshape(len(x), -1).all(dim=1)
    if not bad.any():
        return
    i = int(bad.nonzero()[0, 0])
    ctx, pos = int(b[i]), int(p[i])
    text = model.tokenizer.decode(tokens[ctx, : pos + 1].tolist()[-12:])
    raise NonFiniteActivationError(
        f"The subject model gives NaN/inf at hook {hook_name!r} on {int(bad.sum())} of "
        f"{len(x)} tokens of a batch (first at position {pos}, after {text!r}). The model "
        f"overflows or is broken in {x.dtype}: load it in float32 (or bfloat16 rather than "
        "float16) and check its weights are finite. Nothing was cached."
    )


def _drop_nonfinite(acts: Float[torch.Tensor, "n k"], features: Int[torch.Tensor, " k"] | None,
                    nonfinite: Counter | None) -> Float[torch.Tensor, "n k"]:
    """`acts` with NaN/inf set to 0, after counting them per feature into `nonfinite`."""
    finite = torch.isfinite(acts)
    if bool(finite.all()):
        return acts
    per_col = (~finite).sum(dim=0).cpu()
    cols = per_col.nonzero().flatten()
    ids = (features.cpu()[cols] if features is not None else cols).tolist()
    if nonfinite is None:
        raise NonFiniteActivationError(
            f"sae.encode gives NaN/inf for features {ids[:10]}. Check the SAE's weights "
            "(e.g. torch.isfinite(sae.W_enc).all())."
        )
    for f, n in zip(ids, per_col[cols].tolist(), strict=True):
        nonfinite[int(f)] += int(n)
    # Zeroed only so the sparse store skips them: the count above makes those features'
    # results say `nonfinite` instead of being labeled from what is left.
    return torch.where(finite, acts, torch.zeros((), dtype=acts.dtype, device=acts.device))


def run_key(model: HookedTransformer, sae: Any, corpus: Corpus, spec: HookSpec,
            context_size: int, prepend_bos: bool, config: CacheConfig) -> dict[str, Any]:
    """Everything the cached activations depend on (the features apart)."""
    return {
        "format_version": CACHE_FORMAT_VERSION,
        "model": model_fingerprint(model, spec.stop_at_layer),
        "sae": sae_fingerprint(sae),
        "corpus": corpus.fingerprint(),
        "hook": {"name": spec.hook_name, "head": spec.head_index,
                 "seqpos": list(spec.seqpos_slice)},
        "context_size": context_size,
        "prepend_bos": prepend_bos,
        "max_tokens": config.max_tokens,
        "max_documents": config.max_documents,
    }


def checked_hook(model: HookedTransformer, sae: Any) -> HookSpec:
    """The SAE's hook, checked against the subject model, which must have a tokenizer: what
    every pass of the subject model over a corpus needs first."""
    spec = HookSpec.from_sae(sae)
    spec.check(model)
    if model.tokenizer is None:
        raise ValueError("The subject model has no tokenizer; load it with "
                         "HookedTransformer.from_pretrained or pass tokenizer=...")
    return spec


def build_activation_cache(
    model: HookedTransformer,
    sae: Any,
    corpus: Corpus | Sequence[str] | str | Path,
    features: Sequence[int] | None = None,
    config: CacheConfig | None = None,
    progress: bool | None = None,
) -> ActivationCache:
    """Run (or reuse) the activation cache for `features` (None: all) of `sae` on `corpus`."""
    config = config or CacheConfig()
    corpus = Corpus.of(corpus)
    spec = checked_hook(model, sae)
    feats = None if features is None else sorted({int(f) for f in features})
    context_size, bos, bos_id = resolve_context(model, sae, config)
    key = run_key(model, sae, corpus, spec, context_size, bos, config)
    run_dir = config.root() / digest(key)
    if not config.overwrite:
        found = find_cache(run_dir, feats)
        if found is not None:
            log.info("reusing activation cache %s", found)
            return ActivationCache.open(found)
    final = run_dir / features_key(feats)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    feat_t = None if feats is None else torch.tensor(feats, dtype=torch.long)
    nonfinite: Counter = Counter()
    docs = Counter()

    def counted() -> Iterator[str]:
        for text in corpus:
            docs["documents"] += 1
            yield text

    try:
        writer = ShardWriter(tmp, config.shard_tokens)
        contexts = iter_contexts(counted(), model.tokenizer, context_size, bos_id,
                                 config.max_tokens, config.max_documents)
        with tqdm(total=config.max_tokens, unit="tok", desc="activations",
                  disable=None if progress is None else not progress) as bar:
            for batch, consumed in _batches(contexts, config.batch_size):
                locs, vals = encode_contexts(model, sae, spec, batch, context_size, feat_t,
                                             config.encode_batch_tokens, nonfinite)
                writer.add(batch, locs, vals)
                bar.update(consumed)
        writer.flush()
        if writer.n_contexts == 0:
            what = (f"all {docs['documents']} documents are empty" if docs["documents"]
                    else "it has no documents")
            raise CorpusError(f"The corpus ({corpus.describe()}) gave no tokens: {what}. "
                              "Pass non-empty documents.")
        if nonfinite:
            log.warning("sae.encode gave NaN/inf for %d features (e.g. %s); they get the "
                        "status 'nonfinite'", len(nonfinite), sorted(nonfinite)[:5])
        tok = model.tokenizer
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "complete": True,
            "key": key,
            "features": feats,
            "d_sae": int(sae.cfg.d_sae),
            "model_name": str(model.cfg.model_name),
            "hook_name": spec.hook_name,
            "corpus": corpus.describe(),
            "context_size": context_size,
            "prepend_bos": bos,
            "bos_token_id": bos_id,
            "special_token_ids": sorted(int(i) for i in tok.all_special_ids),
            "n_contexts": writer.n_contexts,
            "n_tokens": writer.n_tokens,
            "nnz": writer.nnz,
            "shards": writer.shards,
            "nonfinite": {str(f): n for f, n in sorted(nonfinite.items())},
        }
        (tmp / META_FILENAME).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ActivationCache.open(final)
