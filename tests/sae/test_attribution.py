"""The g-SAE attribution ``z * |W_dec . grad_x L|``, checked against a brute-force gate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from saelens_tokenlabel.sae import CacheConfig
from saelens_tokenlabel.sae.attribution import attribution_scores
from saelens_tokenlabel.sae.subject import Subject

from .planted import (
    CHINESE_FEATURE,
    CHINESE_SENTENCES,
    DEAD_FEATURE,
    HOOK,
    toy_sentences,
)

TEXTS = toy_sentences(6, seed=3)  # short: one context each


def brute_force(model, sae, texts, features):
    """Per text alone (no padding): a gate g[t, f] = 1 scales feature f's decoder term in
    the activation, ``x' = x + (g - 1) z W_dec[f]``; dL/dg[t, f] = z W_dec[f] . grad_x L."""
    tok = model.tokenizer
    total = torch.zeros(len(features), dtype=torch.float64)
    n = 0
    for text in texts:
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)
                            ["input_ids"]])
        gate = torch.ones(ids.shape[1], len(features), requires_grad=True)

        def splice(act, hook, gate=gate):  # noqa: ARG001
            with torch.no_grad():
                z = sae.encode(act[0])[:, features]
            terms = ((gate - 1) * z)[:, :, None] * sae.W_dec[features].detach()[None]
            return act + terms.sum(1)[None]

        logits = model.run_with_hooks(ids, fwd_hooks=[(HOOK, splice)])
        loss = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        (g,) = torch.autograd.grad(loss, gate)
        total += g[1:].abs().sum(0).double()  # BOS left out
        n += ids.shape[1] - 1
    return (total / n).float()


def test_matches_brute_force_gate(subject, sae):
    feats = [0, 1, 4, 5, 6]
    got = attribution_scores(Subject.of(subject, sae), TEXTS, CacheConfig(batch_size=4))
    assert got.shape == (sae.cfg.d_sae,) and got.dtype == torch.float32
    want = brute_force(subject, sae, TEXTS, feats)
    assert (want > 0).all()
    torch.testing.assert_close(got[feats], want, rtol=1e-4, atol=1e-7)


def test_silent_features_score_zero_and_firing_ones_do_not(subject, sae):
    scores = attribution_scores(Subject.of(subject, sae), TEXTS, CacheConfig(batch_size=3))
    assert scores[DEAD_FEATURE] == 0.0
    assert scores[CHINESE_FEATURE] == 0.0  # no Chinese in the corpus
    with_chinese = attribution_scores(Subject.of(subject, sae), TEXTS + list(CHINESE_SENTENCES))
    assert with_chinese[CHINESE_FEATURE] > 0 and with_chinese[DEAD_FEATURE] == 0.0


def test_max_tokens_and_batching(subject, sae):
    a = attribution_scores(Subject.of(subject, sae), TEXTS, CacheConfig(batch_size=1),
                           max_tokens=20)
    b = attribution_scores(Subject.of(subject, sae), TEXTS, CacheConfig(batch_size=8,
                                                                        max_tokens=20))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    full = attribution_scores(Subject.of(subject, sae), TEXTS)
    assert not torch.allclose(a, full)
    with pytest.raises(ValueError, match="max_tokens"):
        attribution_scores(Subject.of(subject, sae), TEXTS, max_tokens=0)


def test_hook_z_sae_matches_brute_force(subject):
    """A per-head SAE: the activation is one head's z; the decoder term goes back there."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    hook, head = "blocks.0.attn.hook_z", 1
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=6, metadata=SAEMetadata(
        hook_name=hook, hook_head_index=head, model_name="tiny-subject", prepend_bos=True)))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(8, 6, generator=gen))
        sae.W_dec.copy_(torch.randn(6, 8, generator=gen))
        sae.b_enc.fill_(-0.2)
    got = attribution_scores(Subject.of(subject, sae), TEXTS[:3])
    tok = subject.tokenizer
    total, n = torch.zeros(6, dtype=torch.float64), 0
    for text in TEXTS[:3]:
        ids = torch.tensor([[tok.bos_token_id] + tok(text, add_special_tokens=False)
                            ["input_ids"]])
        gate = torch.ones(ids.shape[1], 6, requires_grad=True)

        def splice(act, hook, gate=gate):  # noqa: ARG001
            with torch.no_grad():
                z = sae.encode(act[0, :, head])
            out = act.clone()
            out[0, :, head] = act[0, :, head] + ((gate - 1) * z) @ sae.W_dec.detach()
            return out

        logits = subject.run_with_hooks(ids, fwd_hooks=[(hook, splice)])
        loss = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum")
        (g,) = torch.autograd.grad(loss, gate)
        total += g[1:].abs().sum(0).double()
        n += ids.shape[1] - 1
    want = (total / n).float()
    assert (want > 0).any()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
