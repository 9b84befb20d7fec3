"""The output side of a feature: what its decoder direction says through the unembedding.

`decoder_logits` is the logit lens of ``W_dec[f]`` (g-SAE's steering view: the tokens a
feature's direction pushes up and down), `output_side` its top and bottom tokens for the
report, and `warm_start_logits` turns the promoted subject tokens into initial label logits
``v`` over the *evaluator's* vocabulary by matching token text (the two tokenizers differ).

The SelfIE idea (a feature's decoder vector already says much of what it means) is what makes
the warm start worth trying: the optimiser then starts near the tokens the feature writes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int

from ..records.config import WarmStartConfig
from ..records.errors import LogitLensError
from ..records.features import check_feature_indices

if TYPE_CHECKING:
    from ..evaluator.model import Evaluator
    from .hooks import SubjectModel
    from .subject import Subject

log = logging.getLogger(__name__)

# Hooks whose space is the residual stream itself, or something added to it unchanged.
_RESIDUAL_HOOK = re.compile(
    r"^(hook_embed|hook_pos_embed|blocks\.\d+\.hook_(resid_pre|resid_mid|resid_post|"
    r"attn_out|mlp_out|attn_in|mlp_in))$"
)
_Z_HOOK = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
_RESULT_HOOK = re.compile(r"^blocks\.(\d+)\.attn\.hook_result$")
_MLP_POST_HOOK = re.compile(r"^blocks\.(\d+)\.mlp\.hook_post$")


def check_features(features: Sequence[int], d_sae: int) -> list[int]:
    """Features as a list of ints in ``[0, d_sae)``, or a clear error."""
    return check_feature_indices(features, d_sae)


def residual_directions(
    subject: Subject, features: Sequence[int]
) -> Float[torch.Tensor, "feat d_model"]:
    """``W_dec[f]`` mapped into the residual stream (fp32, on the model's device).

    * residual hooks (``hook_resid_*``, ``hook_attn_out``, ``hook_mlp_out``, ...): as is;
    * ``attn.hook_z``: through the layer's ``W_O`` (one head if the SAE has a
      ``hook_head_index``, else all heads, flattened ``n_heads x d_head`` as SAELens reads
      them, summed);
    * ``attn.hook_result``: the head's output (or the sum over flattened heads);
    * ``mlp.hook_post``: through the layer's ``W_out``.

    Biases (``b_O``, ``b_out``) are left out: they do not scale with the feature. Any other
    hook (queries, keys, pre-activations, norms) has no linear path to the logits, and raises.
    """
    sae, model = subject.sae, subject.model
    feats = check_features(features, subject.d_sae)
    name = sae.cfg.metadata.hook_name or ""
    head = sae.cfg.metadata.hook_head_index
    W_U = model.W_U
    dirs = sae.W_dec.detach()[feats].to(device=W_U.device, dtype=torch.float32)
    d_model = int(model.cfg.d_model)
    if _RESIDUAL_HOOK.match(name):
        out = dirs
    elif m := _Z_HOOK.match(name):
        W_O = model.W_O[int(m.group(1))].detach().float()  # [head, d_head, d_model]
        out = dirs @ W_O[int(head)] if head is not None else torch.einsum(
            "fhd,hdm->fm", dirs.reshape(len(feats), *W_O.shape[:2]), W_O)
    elif _RESULT_HOOK.match(name):
        out = dirs if head is not None else dirs.reshape(len(feats), -1, d_model).sum(1)
    elif m := _MLP_POST_HOOK.match(name):
        out = dirs @ model.W_out[int(m.group(1))].detach().float()
    else:
        raise LogitLensError(
            f"The SAE reads hook {name!r}, which has no linear path to the logits, so its "
            "decoder directions have no logit lens. Supported: hook_resid_pre/mid/post, "
            "hook_attn_out, hook_mlp_out, attn.hook_z (through W_O), attn.hook_result, "
            "mlp.hook_post (through W_out). Skip the output side for this SAE "
            "(leave 'output_side' out of ScoreConfig.scorers, or --no-score output_side)."
        )
    if out.shape[-1] != d_model:
        raise LogitLensError(
            f"Decoder rows of {name!r} map to width {out.shape[-1]}, not the model's d_model "
            f"{d_model}. Is this the model the SAE was trained on (and hook_head_index right)?"
        )
    return out


def decoder_logits(
    subject: Subject, features: Sequence[int]
) -> Float[torch.Tensor, "feat d_vocab_subject"]:
    """Logit lens of the features' decoder directions: ``W_dec[f] @ W_U`` (fp32).

    The final norm: ``ln_final`` divides the residual by its RMS (after centring, for
    LayerNorm), then multiplies by a learned weight. The division is by a positive scalar
    that depends on the whole residual at a token, not on the feature; it scales every logit
    of that token alike, so it changes neither the order nor the sign of the tokens, and it is
    left out (there is no single right value for it). The centring and the weight are fixed
    linear maps that can reorder tokens, so they are applied: the direction is centred for
    ``LN``/``LNPre`` and multiplied by ``ln_final.w`` when the model has one. A model loaded
    with ``fold_ln=True`` already carries the weight in ``W_U`` and has none left, so nothing
    is applied twice. ``b_U`` is left out: it does not depend on the feature.

    Non-residual hooks go through the model's own weights first (see `residual_directions`).
    """
    model = subject.model
    d = residual_directions(subject, features)
    norm = getattr(model.cfg, "normalization_type", None)
    if norm in ("LN", "LNPre"):
        d = d - d.mean(-1, keepdim=True)
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if isinstance(w, torch.Tensor):
        d = d * w.detach().float()
    return d @ model.W_U.detach().float()


def _n_real_tokens(model: SubjectModel) -> int:
    # Rows of W_U past the tokenizer's size are padding, never real tokens.
    n = int(model.cfg.d_vocab)
    tok = getattr(model, "tokenizer", None)
    return min(n, len(tok)) if tok is not None else n


def output_side(
    subject: Subject, features: Sequence[int], k: int = 10,
    logits: Float[torch.Tensor, "feat d_vocab_subject"] | None = None,
) -> dict[int, dict[str, list[list[Any]]]]:
    """Per feature, ``{"promoted": [[token, logit], ...], "suppressed": [...]}``: the `k`
    subject tokens whose logits the decoder direction raises most (highest first) and lowers
    most (lowest first), by `decoder_logits`. Tokens are decoded subject token text.

    `logits` (from `decoder_logits`) saves recomputing them."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    feats = check_features(features, subject.d_sae)
    if logits is None:
        logits = decoder_logits(subject, feats)
    logits = logits[:, : _n_real_tokens(subject.model)].float().cpu()
    k = min(k, logits.shape[1])
    tok = subject.tokenizer
    top = logits.topk(k, dim=-1)
    bottom = (-logits).topk(k, dim=-1)
    out: dict[int, dict[str, list[list[Any]]]] = {}
    for row, f in enumerate(feats):
        out[f] = {
            "promoted": [[tok.decode([int(i)]), float(v)]
                         for i, v in zip(top.indices[row], top.values[row], strict=True)],
            "suppressed": [[tok.decode([int(i)]), -float(v)]
                           for i, v in zip(bottom.indices[row], bottom.values[row],
                                           strict=True)],
        }
    return out


# ---------------------------------------------------------------------------- warm start
def normalise_token_text(text: str, casefold: bool = False) -> str:
    """The text two tokenizers' tokens are matched on: stripped of surrounding whitespace
    (GPT-2's "Ġcat" and SentencePiece's "▁cat" both decode to " cat"), optionally casefolded."""
    text = text.strip()
    return text.casefold() if casefold else text


_TEXT_INDEX: weakref.WeakKeyDictionary[Any, dict[tuple[int, bool], dict[str, list[int]]]] = \
    weakref.WeakKeyDictionary()


def token_text_index(tokenizer: Any, n_vocab: int, casefold: bool = False
                     ) -> dict[str, list[int]]:
    """Normalised token text -> ids (below `n_vocab`) of the tokens with that text. Byte
    fragments that decode to U+FFFD, and whitespace-only tokens, are left out. Built once
    per tokenizer (a Llama-3 vocabulary takes about a second)."""
    try:
        per_tok = _TEXT_INDEX.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no caching
        per_tok = {}
    n = min(len(tokenizer), int(n_vocab))
    if (n, casefold) not in per_tok:
        texts = tokenizer.batch_decode([[i] for i in range(n)])
        index: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            key = normalise_token_text(t, casefold)
            if key and "\ufffd" not in key:
                index.setdefault(key, []).append(i)
        per_tok[(n, casefold)] = index
    return per_tok[(n, casefold)]


def warm_start_logits(
    subject: Subject,
    evaluator: Evaluator,
    features: Sequence[int],
    config: WarmStartConfig | None = None,
    vocab_mask: Bool[torch.Tensor, " d_vocab_eval"] | None = None,
    **options: Any,
) -> Float[torch.Tensor, "feat d_vocab_eval"]:
    """Initial label logits ``v`` over the evaluator's vocabulary from the decoder direction.

    For each feature: the `top_k` subject tokens with the highest `decoder_logits` that the
    direction really promotes (standardised logit ``z > 0``, i.e. above the vocabulary's
    mean); each is decoded, normalised (`normalise_token_text`) and matched to the evaluator
    tokens with the same normalised text. Subject tokens with no match (or whose matches are
    all outside the vocabulary mask) are dropped. A matched evaluator token gets
    ``scale * exp((z - z_top) / temperature)`` (the best of its subject tokens if several
    match), ``z_top`` being the feature's top subject token, matched or not: the top token
    starts at exactly ``scale`` when it has a match, weaker ones lower (a token one standard
    deviation of the subject logits below the top gets ``scale / e`` at ``temperature=1``),
    and every other token at 0, so ``p(top) / p(unmatched) = exp(scale)`` at step 0. A
    feature with no match at all gets a row of zeros (the usual uniform start), and a log
    line says so.

    The options (`top_k`, `scale`, `temperature`, `casefold`, `top_mass`) are the fields of
    `WarmStartConfig` (`LabelConfig.warm_start_options` in a run): pass a `config`, keywords,
    or both (keywords override the config's fields).

    `top_mass` sets `scale` from the vocabulary size instead (`WarmStartConfig.start_logit`).
    A subject " cat" or "cat" matches evaluator " cat" and "cat": the optimiser decides.

    The mask is `vocab_mask` if given (a run passes ``evaluator.label_vocab(config)``), else
    ``evaluator.vocab_mask()``; masked tokens stay 0 (the optimiser masks them anyway).
    Returns fp32 on the CPU; the optimiser's ``[feat, slot, d_vocab]`` logits take it as
    slot 0.
    """
    cfg = _warm_start_config(config, options)
    feats = check_features(features, subject.d_sae)
    mask = _warm_start_mask(evaluator, vocab_mask)
    scale = cfg.start_logit(int(mask.sum()))
    index = token_text_index(evaluator.tokenizer, evaluator.d_vocab, cfg.casefold)
    model = subject.model
    logits = decoder_logits(subject, feats)[:, : _n_real_tokens(model)].float().cpu()
    z = (logits - logits.mean(-1, keepdim=True)) / logits.std(-1, keepdim=True).clamp_min(1e-12)
    top = logits.topk(min(cfg.top_k, logits.shape[1]), dim=-1).indices
    v = torch.zeros(len(feats), evaluator.d_vocab)
    for row, f in enumerate(feats):
        matched = _promoted_matches(z[row], top[row], model.tokenizer, index, mask,
                                    cfg.casefold)
        if not matched:
            log.info("warm start: none of feature %d's top %d promoted subject tokens has an "
                     "evaluator token with the same text; it starts uniform", f, cfg.top_k)
            continue
        best = float(z[row, top[row, 0]])
        for zi, ids in matched:
            w = scale * torch.exp(torch.tensor((zi - best) / cfg.temperature)).item()
            for e in ids:
                v[row, e] = max(float(v[row, e]), w)
    return v


def _warm_start_config(config: WarmStartConfig | None, options: dict[str, Any]
                       ) -> WarmStartConfig:
    if config is not None and not isinstance(config, WarmStartConfig):
        raise TypeError(f"config must be a WarmStartConfig, got {type(config).__name__}; pass "
                        "the options by keyword (top_k=..., scale=...)")
    return dataclasses.replace(config or WarmStartConfig(), **options)


def _warm_start_mask(evaluator: Evaluator,
                     vocab_mask: Bool[torch.Tensor, " d_vocab_eval"] | None
                     ) -> Bool[torch.Tensor, " d_vocab_eval"]:
    """`vocab_mask`, else the evaluator's default mask; checked, on the CPU."""
    d_eval = evaluator.d_vocab
    mask = vocab_mask if vocab_mask is not None else evaluator.vocab_mask()
    if mask.shape != (d_eval,):
        raise ValueError(f"vocab_mask has shape {tuple(mask.shape)}; the evaluator's vocabulary "
                         f"needs ({d_eval},).")
    return mask.bool().cpu()


def _promoted_matches(z: Float[torch.Tensor, " d_vocab_subject"],
                      top: Int[torch.Tensor, " k"], tokenizer: Any,
                      index: dict[str, list[int]], mask: Bool[torch.Tensor, " d_vocab_eval"],
                      casefold: bool) -> list[tuple[float, list[int]]]:
    """(standardised logit, allowed evaluator ids with the same text) of each top subject
    token that the direction really promotes (``z > 0``) and that has a match."""
    matched: list[tuple[float, list[int]]] = []
    for sid in top.tolist():
        if z[sid] <= 0:
            break  # not promoted: the rest of the top-k are ties or below the mean
        key = normalise_token_text(tokenizer.decode([sid]), casefold)
        ids = [e for e in index.get(key, ()) if mask[e]]
        if ids:
            matched.append((float(z[sid]), ids))
    return matched
