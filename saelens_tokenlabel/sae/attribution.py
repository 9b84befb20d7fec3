"""Which features matter to the model's loss: the g-SAE attribution, averaged over a corpus.

For a token with activation ``x`` at the SAE's hook and feature activations ``z =
sae.encode(x)``, feature f's attribution is ``z_f * |W_dec[f] . grad_x L|`` (Olmo et al.,
"Features that Make a Difference", the term inside their TopK): the first-order change in the
loss from switching the feature's contribution to the reconstruction off. `attribution_scores`
averages it over the corpus's tokens, so ``--order attribution`` can label the features that
matter most first.

Conventions (each changes the scale of every score alike, never the order between features):

* ``L`` is the model's next-token cross-entropy summed over the real tokens of a context, so
  ``grad_x L`` at one token collects its effect on its own prediction and every later one
  (the same total loss as a batch of single contexts; batching never changes a score);
* the model reads the true activation ``x`` (no SAE splice); the SAE only reads it;
* tokens are the positions the activation cache encodes (the SAE's ``seqpos_slice``), minus
  the prepended BOS, whose activations speak about the position rather than the corpus;
* ``W_dec[f] . g`` is taken as the vector-Jacobian product of `sae.decode`, which is
  ``W_dec @ g`` for a plain SAE and also covers decoders that rescale their output
  (activation normalisation) or reshape it (``hook_z``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int

from ..evaluator.loading import tokenizer_of
from .activations import _batches, check_tokenizer, iter_contexts, resolve_context
from .config import CacheConfig
from .corpus import Corpus
from .gsae import encode_with
from .hooks import activation_and_grad, to_sae_input
from .subject import Subject, require_subject

if TYPE_CHECKING:
    from sae_lens import SAE


def _pad(contexts: Sequence[Sequence[int]], pad_id: int | None
         ) -> tuple[Int[torch.Tensor, "b pos"], Int[torch.Tensor, "b pos"]]:
    length = max(len(c) for c in contexts)
    tokens = torch.full((len(contexts), length), 0 if pad_id is None else int(pad_id),
                        dtype=torch.long)
    mask = torch.zeros((len(contexts), length), dtype=torch.long)
    for i, c in enumerate(contexts):
        tokens[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[i, : len(c)] = 1
    return tokens, mask


def decoder_projection(
    sae: SAE[Any], grad: Float[torch.Tensor, " n *d"]
) -> Float[torch.Tensor, "n d_sae"]:
    """``W_dec @ g`` per token, as the vector-Jacobian product of `sae.decode` (fp32)."""
    p = next(sae.parameters())
    with torch.enable_grad():
        z = torch.zeros(len(grad), int(sae.cfg.d_sae), device=p.device, dtype=p.dtype,
                        requires_grad=True)
        out = sae.decode(z)
        g = grad.to(device=out.device, dtype=out.dtype).reshape(out.shape)
        (proj,) = torch.autograd.grad(out, z, grad_outputs=g)
    return proj.float()


def batch_attribution(
    subject: Subject, contexts: Sequence[Sequence[int]], context_size: int, bos: bool,
    encode_batch_tokens: int = 2048,
) -> tuple[Float[torch.Tensor, " d_sae"], int]:
    """Sum over the batch's counted tokens of ``z * |W_dec . grad_x L|``, and their count."""
    model, sae, spec = subject.model, subject.sae, subject.hook
    tokens, mask = _pad(contexts, tokenizer_of(model).pad_token_id)
    device = model.W_E.device
    x, grad = activation_and_grad(model, spec, tokens.to(device), mask.to(device))
    counted = mask.bool() & spec.position_mask(context_size)[: tokens.shape[1]][None]
    if bos:
        counted[:, 0] = False
    b, p = counted.nonzero(as_tuple=True)
    b, p = b.to(x.device), p.to(x.device)
    xs = to_sae_input(sae, x[b, p], spec.hook_name)
    gs = grad[b, p]
    total = torch.zeros(int(sae.cfg.d_sae), dtype=torch.float64)
    for start in range(0, len(xs), encode_batch_tokens):
        sl = slice(start, start + encode_batch_tokens)
        with torch.no_grad():
            z = encode_with(sae, xs[sl], gs[sl])
        if z.is_sparse:
            z = z.to_dense()
        proj = decoder_projection(sae, gs[start : start + encode_batch_tokens])
        total += (z.float() * proj.abs()).sum(0).double().cpu()
    return total, len(xs)


def attribution_scores(
    subject: Subject,
    corpus: Corpus | Sequence[str] | str | Path,
    cache_config: CacheConfig | None = None,
    max_tokens: int | None = None,
) -> Float[torch.Tensor, " d_sae"]:
    """Mean over the corpus's tokens of ``z ∘ |W_decᵀ ∇_x L|`` per feature (fp32, CPU).

    Contexts are cut as for the activation cache (`cache_config`'s context size, BOS,
    batch size and document limit; else the SAE's metadata). `max_tokens` caps the corpus
    tokens read (default: `cache_config.max_tokens`, else all). A feature that never fires
    scores exactly 0. See the module docstring for the conventions.
    """
    subject = require_subject(subject, "attribution_scores")
    config = cache_config or CacheConfig()
    corpus = Corpus.of(corpus)
    check_tokenizer(subject)
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    context_size, bos, bos_id = resolve_context(subject, config)
    limit = max_tokens if max_tokens is not None else config.max_tokens
    contexts = iter_contexts(corpus, subject.tokenizer, context_size, bos_id, limit,
                             config.max_documents)
    total = torch.zeros(subject.d_sae, dtype=torch.float64)
    n = 0
    for batch, _ in _batches(contexts, config.batch_size):
        s, c = batch_attribution(subject, batch, context_size, bos, config.encode_batch_tokens)
        total += s
        n += c
    if n == 0:
        raise ValueError(f"The corpus ({corpus.describe()}) gave no tokens to attribute. Pass "
                         "non-empty documents.")
    return (total / n).float()
