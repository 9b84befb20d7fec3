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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ..evaluator.loading import tokenizer_of
from ..records.errors import CacheDamagedError, NonFiniteActivationError
from .cache import META_FILENAME, ActivationCache, ShardWriter, features_key, find_cache
from .config import CacheConfig
from .corpus import Corpus, CorpusError
from .fingerprint import CACHE_FORMAT_VERSION, digest, model_fingerprint, sae_fingerprint
from .gsae import encode_with, gradient_definition, needs_gradient
from .hooks import activation_and_grad, run_to_hook, to_sae_input
from .subject import Subject, require_subject

if TYPE_CHECKING:
    from .hooks import SubjectModel

log = logging.getLogger(__name__)
DEFAULT_CONTEXT_SIZE = 128


def resolve_context(subject: Subject, config: CacheConfig) -> tuple[int, bool, int | None]:
    """Context size, BOS flag and BOS id, from the config, else the SAE's metadata."""
    meta = subject.sae.cfg.metadata
    size = config.context_size or meta.context_size or DEFAULT_CONTEXT_SIZE
    size = min(int(size), int(subject.model.cfg.n_ctx))
    bos = config.prepend_bos if config.prepend_bos is not None else meta.prepend_bos
    bos = True if bos is None else bool(bos)
    bos_id = subject.tokenizer.bos_token_id if bos else None
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


@dataclass(frozen=True)
class SaeEncoder:
    """What every batch of one pass of the subject model and the SAE shares."""

    subject: Subject
    """The subject model (run up to the SAE's hook) and the SAE whose `encode` turns hook
    activations into feature activations."""
    features: Int[torch.Tensor, " k"] | None
    """Feature columns to keep (None: all)."""
    encode_batch_tokens: int
    """Tokens per `sae.encode` call: bounds the dense ``[tokens x d_sae]`` block."""


@torch.no_grad()
def encode_contexts(
    encoder: SaeEncoder, contexts: Sequence[Sequence[int]], context_size: int,
    nonfinite: Counter | None = None,
) -> tuple[Int[torch.Tensor, "nnz 3"], Float[torch.Tensor, " nnz"]]:
    """Nonzero SAE activations of a batch: (context in batch, position, feature), value.
    `context_size` is the length the hook's position slice is read against.

    NaN/inf SAE activations are left out and counted per feature into `nonfinite`; without
    a counter they are an error. NaN/inf at the hook itself is always an error.
    """
    model, sae, spec = encoder.subject.model, encoder.subject.sae, encoder.subject.hook
    tokens, mask = _padded(contexts, tokenizer_of(model).pad_token_id)
    device = model.W_E.device
    # Right padding: causal attention keeps pad tokens out of every real token's view; the
    # explicit mask stops TransformerLens from guessing padding from token ids.
    grad = None
    if needs_gradient(sae):
        # A g-SAE selects by the gradient of the model's loss at the hook: run the whole
        # model, backward to the hook's activations only (never into the weights).
        act, grad = activation_and_grad(model, spec, tokens.to(device), mask.to(device))
    else:
        act = run_to_hook(model, spec, tokens.to(device), mask.to(device))
    valid = mask.bool() & spec.position_mask(context_size)[: tokens.shape[1]][None]
    b, p = valid.nonzero(as_tuple=True)
    bd, pd = b.to(act.device), p.to(act.device)
    x = to_sae_input(sae, act[bd, pd], spec.hook_name)
    g = None if grad is None else to_sae_input(sae, grad[bd, pd], spec.hook_name)
    del act, grad
    _check_finite_input(model, x, b, p, tokens, spec.hook_name)
    r, c, vals = _encode_sparse(encoder, x, nonfinite, g)
    features = encoder.features
    feat = features.cpu()[c] if features is not None else c
    locs = torch.stack([b[r], p[r], feat], dim=1).to(torch.int32)
    return locs, vals


def _padded(contexts: Sequence[Sequence[int]], pad: int | None
            ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """The contexts right-padded into one tensor, and the mask of their real tokens."""
    length = max(len(c) for c in contexts)
    tokens = torch.full((len(contexts), length), 0 if pad is None else int(pad), dtype=torch.long)
    mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for i, c in enumerate(contexts):
        tokens[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[i, : len(c)] = 1
    return tokens, mask


def _encode_sparse(encoder: SaeEncoder, x: Float[torch.Tensor, " n *d"],
                   nonfinite: Counter | None, grad: Float[torch.Tensor, " n *d"] | None = None
                   ) -> tuple[Int[torch.Tensor, " nnz"], Int[torch.Tensor, " nnz"],
                              Float[torch.Tensor, " nnz"]]:
    """(row of `x`, column among the kept features, value) of every nonzero activation, with
    `sae.encode` on at most `encode_batch_tokens` rows at a time (a g-SAE's with the
    gradient at the hook, `grad`)."""
    features, step = encoder.features, encoder.encode_batch_tokens
    rows, cols, vals = [], [], []
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        acts = encode_with(encoder.subject.sae, chunk,
                           None if grad is None else grad[start : start + step])
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
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0)
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


def _check_finite_input(model: SubjectModel, x: Float[torch.Tensor, " n *d"],
                        b: Int[torch.Tensor, " n"], p: Int[torch.Tensor, " n"],
                        tokens: Int[torch.Tensor, "batch pos"], hook_name: str) -> None:
    bad = ~torch.isfinite(x).reshape(len(x), -1).all(dim=1)
    if not bad.any():
        return
    i = int(bad.nonzero()[0, 0])
    ctx, pos = int(b[i]), int(p[i])
    text = tokenizer_of(model).decode(tokens[ctx, : pos + 1].tolist()[-12:])
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


def run_key(subject: Subject, corpus: Corpus, context_size: int, prepend_bos: bool,
            config: CacheConfig) -> dict[str, Any]:
    """Everything the cached activations depend on (the features apart)."""
    model, sae, spec = subject.model, subject.sae, subject.hook
    gradient = gradient_definition(sae)
    key = {
        "format_version": CACHE_FORMAT_VERSION,
        # A g-SAE's activations depend on every block (through the loss's gradient).
        "model": model_fingerprint(model, None if gradient else spec.stop_at_layer),
        "sae": sae_fingerprint(sae),
        "corpus": corpus.fingerprint(config.corpora_dir()),
        "hook": {"name": spec.hook_name, "head": spec.head_index,
                 "seqpos": list(spec.seqpos_slice)},
        "context_size": context_size,
        "prepend_bos": prepend_bos,
        "max_tokens": config.max_tokens,
        "max_documents": config.max_documents,
    }
    if gradient is not None:
        key["gradient"] = gradient  # the loss and sign the selection used
    return key


def check_tokenizer(subject: Subject) -> None:
    """The subject model must have a tokenizer: every pass over a corpus needs it first."""
    if subject.tokenizer is None:
        raise ValueError("The subject model has no tokenizer; load it with "
                         "HookedTransformer.from_pretrained or pass tokenizer=...")


def build_activation_cache(
    subject: Subject,
    corpus: Corpus | Sequence[str] | str | Path,
    features: Sequence[int] | None = None,
    config: CacheConfig | None = None,
    progress: bool | None = None,
) -> ActivationCache:
    """Run (or reuse) the activation cache for `features` (None: all) of the subject's SAE on
    `corpus`."""
    subject = require_subject(subject, "build_activation_cache")
    config = config or CacheConfig()
    run = _CacheRun.plan(subject, Corpus.of(corpus), features, config)
    if not config.overwrite:
        found = find_cache(run.run_dir, run.features)
        if found is not None:
            try:
                cache = ActivationCache.open(found)
                log.info("reusing activation cache %s", found)
                return cache
            except CacheDamagedError as err:
                # Derived data, keyed by everything it depends on: rebuilt, it is the same.
                log.warning("the activation cache file %s cannot be read (%s); rebuilding "
                            "the cache", err.path, err.problem)
    final = run.run_dir / features_key(run.features)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer, nonfinite = run.write_shards(tmp, progress)
        (tmp / META_FILENAME).write_text(json.dumps(run.meta(writer, nonfinite), indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ActivationCache.open(final)


@dataclass(frozen=True)
class _CacheRun:
    """One build of the activation cache: what it runs, and where it goes."""

    subject: Subject
    corpus: Corpus
    config: CacheConfig
    features: list[int] | None
    """Sorted, unique; None: all."""
    context_size: int
    bos: bool
    bos_id: int | None
    key: dict[str, Any]
    """`run_key`: everything the activations depend on."""
    run_dir: Path

    @classmethod
    def plan(cls, subject: Subject, corpus: Corpus, features: Sequence[int] | None,
             config: CacheConfig) -> _CacheRun:
        check_tokenizer(subject)
        feats = None if features is None else sorted({int(f) for f in features})
        context_size, bos, bos_id = resolve_context(subject, config)
        key = run_key(subject, corpus, context_size, bos, config)
        return cls(subject, corpus, config, feats, context_size, bos, bos_id, key,
                   config.root() / digest(key))

    def write_shards(self, directory: Path, progress: bool | None
                     ) -> tuple[ShardWriter, Counter]:
        """Stream the corpus through the model and the SAE into shards under `directory`;
        the writer (with its totals) and the per-feature count of NaN/inf SAE values."""
        config = self.config
        feat_t = None if self.features is None else torch.tensor(self.features,
                                                                 dtype=torch.long)
        encoder = SaeEncoder(self.subject, feat_t, config.encode_batch_tokens)
        nonfinite: Counter = Counter()
        docs: Counter[str] = Counter()

        def counted() -> Iterator[str]:
            for text in self.corpus:
                docs["documents"] += 1
                yield text

        writer = ShardWriter(directory, config.shard_tokens)
        contexts = iter_contexts(counted(), self.subject.tokenizer, self.context_size,
                                 self.bos_id, config.max_tokens, config.max_documents)
        with tqdm(total=config.max_tokens, unit="tok", desc="activations",
                  disable=None if progress is None else not progress) as bar:
            for batch, consumed in _batches(contexts, config.batch_size):
                locs, vals = encode_contexts(encoder, batch, self.context_size, nonfinite)
                writer.add(batch, locs, vals)
                bar.update(consumed)
        writer.flush()
        if writer.n_contexts == 0:
            what = (f"all {docs['documents']} documents are empty" if docs["documents"]
                    else "it has no documents")
            raise CorpusError(f"The corpus ({self.corpus.describe()}) gave no tokens: {what}. "
                              "Pass non-empty documents.")
        if nonfinite:
            log.warning("sae.encode gave NaN/inf for %d features (e.g. %s); they get the "
                        "status 'nonfinite'", len(nonfinite), sorted(nonfinite)[:5])
        return writer, nonfinite

    def meta(self, writer: ShardWriter, nonfinite: Counter) -> dict[str, Any]:
        """The cache's ``meta.json``: what was run, the shard index and the totals."""
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "complete": True,
            "key": self.key,
            "features": self.features,
            "d_sae": self.subject.d_sae,
            "model_name": str(self.subject.model.cfg.model_name),
            "hook_name": self.subject.hook.hook_name,
            "corpus": self.corpus.describe(),
            "context_size": self.context_size,
            "prepend_bos": self.bos,
            "bos_token_id": self.bos_id,
            "special_token_ids": sorted(int(i) for i in self.subject.tokenizer.all_special_ids),
            "n_contexts": writer.n_contexts,
            "n_tokens": writer.n_tokens,
            "nnz": writer.nnz,
            "shards": writer.shards,
            "peak_buffered_tokens": writer.peak_tokens,
            "nonfinite": {str(f): n for f, n in sorted(nonfinite.items())},
        }
