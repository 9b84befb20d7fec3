"""The output side: the logit lens of planted decoder rows, non-residual hooks through the
model's own weights, and the warm start mapped into the evaluator's vocabulary by text."""

from __future__ import annotations

import math

import pytest
import torch

from saelens_tokenlabel.sae.logit_lens import (
    LogitLensError,
    WarmStartConfig,
    decoder_logits,
    output_side,
    residual_directions,
    warm_start_logits,
)
from saelens_tokenlabel.sae.subject import Subject

from .planted import CHINESE_FEATURE, planted_sae, planted_tokens, single_token, subject_model

CAT_DIR, BYTE_DIR = 10, 11  # residual dimensions the planted unembedding reads


@pytest.fixture(scope="module")
def lens_model(subject_tokenizer):
    """Subject model whose unembedding reads dimension 10 for " cat" (5), " dog" (4) and
    " blue" (-3) only, dimension 11 for one Chinese byte fragment only; ln_final.w[10] = 2."""
    tok = subject_tokenizer
    model = subject_model(tok)
    with torch.no_grad():
        model.W_U[CAT_DIR] = 0.0
        model.W_U[BYTE_DIR] = 0.0
        model.W_U[CAT_DIR, single_token(tok, " cat")] = 5.0
        model.W_U[CAT_DIR, single_token(tok, " dog")] = 4.0
        model.W_U[CAT_DIR, single_token(tok, " blue")] = -3.0
        model.W_U[BYTE_DIR, planted_tokens(tok)[CHINESE_FEATURE][0]] = 5.0
        model.ln_final.w[CAT_DIR] = 2.0
    return model


def _sae_with_rows(rows: dict[int, int], **meta):
    sae = planted_sae(**meta)
    with torch.no_grad():
        for f, dim in rows.items():
            sae.W_dec[f] = 0.0
            sae.W_dec[f, dim] = 1.0
    return sae


def test_planted_decoder_row_promotes_and_suppresses_its_tokens(lens_model, subject_tokenizer):
    sae = _sae_with_rows({0: CAT_DIR})
    logits = decoder_logits(Subject.of(lens_model, sae), [0])
    # ln_final's weight is applied (x2), its data-dependent 1/rms is not.
    assert torch.equal(logits[0], 2.0 * lens_model.W_U[CAT_DIR].detach())
    side = output_side(Subject.of(lens_model, sae), [0], k=2)[0]
    assert side["promoted"] == [[" cat", 10.0], [" dog", 8.0]]
    assert side["suppressed"][0] == [" blue", -6.0]
    assert len(side["suppressed"]) == 2
    assert set(side) == {"promoted", "suppressed"}


@pytest.mark.parametrize("hook, head, width", [
    ("blocks.0.attn.hook_z", None, 32),  # all heads, flattened as SAELens reads them
    ("blocks.0.attn.hook_z", 2, 8),
    ("blocks.0.mlp.hook_post", None, 64),
])
def test_non_residual_hooks_map_through_the_models_own_weights(subject, hook, head, width):
    """Adding the decoder row at the hook changes what the block writes to the residual
    stream by exactly `residual_directions` (the bias never scales with the feature)."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = StandardSAE(StandardSAEConfig(d_in=width, d_sae=3, metadata=SAEMetadata(
        hook_name=hook, hook_head_index=head, model_name="tiny-subject")))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(3, width, generator=torch.Generator().manual_seed(0)))
    out_hook = "blocks.0.hook_attn_out" if "attn" in hook else "blocks.0.hook_mlp_out"
    tokens = torch.tensor([[5, 17, 42, 7]])
    got = {}

    def add(act, hook):  # noqa: ARG001
        d = sae.W_dec[1].detach()
        if head is not None:
            act[:, :, head] += d
        else:
            act += d.reshape(act.shape[2:])
        return act

    def grab(name):
        def f(act, hook):  # noqa: ARG001
            got[name] = act.detach().clone()
        return f

    subject.run_with_hooks(tokens, fwd_hooks=[(out_hook, grab("base"))])
    subject.run_with_hooks(tokens, fwd_hooks=[(hook, add), (out_hook, grab("steered"))])
    delta = (got["steered"] - got["base"])[0]
    want = residual_directions(Subject.of(subject, sae), [1])[0]
    for pos in range(tokens.shape[1]):
        torch.testing.assert_close(delta[pos], want, atol=1e-5, rtol=1e-4)


def test_hook_without_linear_path_to_logits_says_so(subject):
    sae = planted_sae(hook="blocks.0.attn.hook_q")
    with pytest.raises(LogitLensError, match="no linear path"):
        decoder_logits(Subject.of(subject, sae), [0])
    with pytest.raises(ValueError, match="out of range"):
        decoder_logits(Subject.of(subject, planted_sae()), [99])


def test_warm_start_maps_promoted_subject_tokens_to_evaluator_tokens(lens_model,
                                                                     toy_evaluator):
    ev_tok = toy_evaluator.tokenizer
    ev_ids = {w: {i for i in range(len(ev_tok)) if ev_tok.decode([i]).strip() == w}
              for w in ("cat", "dog")}
    assert all(ev_ids.values())
    sae = _sae_with_rows({0: CAT_DIR, 1: BYTE_DIR})
    v = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0, 1], top_k=2, scale=5.0)
    assert v.shape == (2, toy_evaluator.d_vocab) and v.dtype == torch.float32
    nonzero = set(v[0].nonzero().flatten().tolist())
    assert nonzero == ev_ids["cat"] | ev_ids["dog"]  # " cat" and "cat" alike, nothing else
    # The top token starts at exactly `scale`, the next one standard deviation of the
    # subject logits lower at 1/e of it: " dog" (8) is 2 logits below " cat" (10).
    row = 2.0 * lens_model.W_U[CAT_DIR].detach()
    dog = 5.0 * torch.exp(torch.tensor(10.0 - 8.0).neg() / row.std()).item()
    for i in ev_ids["cat"]:
        assert v[0, i] == 5.0
    for i in ev_ids["dog"]:
        assert v[0, i].item() == pytest.approx(dog, rel=1e-5) and 0 < dog < 5.0
    p = torch.softmax(v[0].masked_fill(~toy_evaluator.vocab_mask(), float("-inf")), -1)
    assert int(p.argmax()) in ev_ids["cat"]
    # A byte fragment (U+FFFD alone) has no evaluator counterpart: uniform start.
    assert not v[1].any()
    only_cat = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], top_k=1)
    assert set(only_cat[0].nonzero().flatten().tolist()) == ev_ids["cat"]
    # Tokens outside the vocabulary mask are never chosen.
    mask = toy_evaluator.vocab_mask()
    mask[list(ev_ids["cat"])] = False
    masked = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], top_k=2,
                               vocab_mask=mask)
    assert set(masked[0].nonzero().flatten().tolist()) == ev_ids["dog"]
    # Still weighed against the top subject token, matched or not.
    assert all(masked[0, i].item() == pytest.approx(dog, rel=1e-5) for i in ev_ids["dog"])


def test_top_mass_sets_the_scale_from_the_vocabulary(lens_model, toy_evaluator):
    sae = _sae_with_rows({0: CAT_DIR})
    mask = toy_evaluator.vocab_mask()
    v = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], top_k=1, top_mass=0.5)
    p = torch.softmax(v[0].masked_fill(~mask, float("-inf")), -1)
    # Top-1 only: " cat" and "cat" each start at the scale that gives one token half the mass.
    ids = v[0].nonzero().flatten()
    assert len(ids) == 2
    n = int(mask.sum())
    assert v[0, ids[0]].item() == pytest.approx(math.log(n - 1))
    assert p[ids].sum().item() == pytest.approx(2 / (2 + (n - 2) / (n - 1)), rel=1e-5)
    with pytest.raises(ValueError, match="top_mass"):
        warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], top_mass=1.0)


def test_warm_start_options_come_as_a_config_or_as_keywords(lens_model, toy_evaluator):
    sae = _sae_with_rows({0: CAT_DIR, 1: BYTE_DIR})
    cfg = WarmStartConfig(top_k=2, scale=3.0, temperature=0.5)
    by_config = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0, 1], cfg)
    by_keywords = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0, 1], top_k=2,
                                    scale=3.0,
                                    temperature=0.5)
    assert torch.equal(by_config, by_keywords) and by_config.max().item() == 3.0
    # Keywords override the config's fields.
    top1 = warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], cfg, top_k=1)
    assert torch.equal(top1, warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0],
                                               top_k=1,
                                               scale=3.0, temperature=0.5))
    for bad, match in [({"top_k": 0}, "top_k"), ({"temperature": 0.0}, "temperature"),
                       ({"scale": -1.0}, "scale")]:
        with pytest.raises(ValueError, match=match):
            WarmStartConfig(**bad)
        with pytest.raises(ValueError, match=match):
            warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], **bad)
    with pytest.raises(TypeError, match="top_z"):
        warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], top_z=3)
    with pytest.raises(TypeError, match="WarmStartConfig"):
        warm_start_logits(Subject.of(lens_model, sae), toy_evaluator, [0], 20)
