"""The g-SAE architecture: gradient-weighted TopK, registered with SAELens, and the activation
cache's gradient-aware path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.gsae import (
    GradientRequiredError,
    gsae_classes,
    needs_gradient,
    supplied_gradient,
)
from saelens_tokenlabel.sae.hooks import HookSpec, activation_and_grad
from saelens_tokenlabel.sae.subject import Subject

from .planted import ANIMAL_FEATURE, D_MODEL, planted_gsae, planted_sae, subject_model

D_SAE, K = 16, 3


def random_gsae(dtype=torch.float64, seed=0):
    """A g-SAE on the subject's `blocks.1.hook_resid_pre` (the loss depends on what follows)."""
    from sae_lens.saes.sae import SAEMetadata

    gsae, config = gsae_classes()
    sae = gsae(config(d_in=D_MODEL, d_sae=D_SAE, k=K, dtype=str(dtype).split(".")[-1],
                      metadata=SAEMetadata(hook_name="blocks.1.hook_resid_pre",
                                           context_size=32, prepend_bos=True)))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_MODEL, D_SAE, generator=g, dtype=dtype))
        sae.W_dec.copy_(torch.randn(D_SAE, D_MODEL, generator=g, dtype=dtype) * 3)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=g, dtype=dtype))
        sae.b_dec.copy_(0.1 * torch.randn(D_MODEL, generator=g, dtype=dtype))
    return sae


def _direct(model, sae, ids):
    """x at the hook and dL/dx for one context, by a route of its own: the blocks from the
    hook on, run on a leaf, and torch.autograd.grad of the summed next-token loss."""
    tokens = torch.tensor([ids])
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    x = cache["blocks.1.hook_resid_pre"].detach().clone().requires_grad_(True)
    logits = model(x, start_at_layer=1)
    loss = F.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="sum")
    (g,) = torch.autograd.grad(loss, x)
    return x.detach()[0], g[0]


def _by_hand(sae, x, g, k=K):
    """The selection written out per token: the k latents ranked by (score, z, -index), in
    plain Python (`sorted` on tuples is lexicographic)."""
    z = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).detach()
    score = z * (g @ sae.W_dec.T).abs().detach()
    out = torch.zeros_like(z)
    for t in range(len(z)):
        ranked = sorted(range(z.shape[1]), key=lambda i: (-float(score[t, i]),
                                                          -float(z[t, i]), i))
        for i in ranked[:k]:
            out[t, i] = z[t, i].relu()
    return out, z


@pytest.fixture(scope="module")
def subject64(subject_tokenizer):
    return subject_model(subject_tokenizer).to(torch.float64)


def test_encode_selects_by_the_gradient_exactly(subject64, subject_tokenizer, toy_corpus):
    sae = random_gsae()
    assert needs_gradient(sae) and not needs_gradient(planted_sae())
    spec = HookSpec.from_sae(sae)
    moved = 0
    for text in toy_corpus[:6]:
        ids = [subject_tokenizer.bos_token_id] + subject_tokenizer(text)["input_ids"]
        x, g = _direct(subject64, sae, ids)
        mask = torch.ones(1, len(ids), dtype=torch.long)
        x2, g2 = activation_and_grad(subject64, spec, torch.tensor([ids]), mask)
        torch.testing.assert_close(x2[0], x, rtol=0, atol=1e-12)
        torch.testing.assert_close(g2[0], g, rtol=1e-12, atol=1e-12)
        want, z = _by_hand(sae, x, g)
        with torch.no_grad():
            got = sae.encode(x, grad=g)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        # Plain TopK (by z alone) would choose other latents on some tokens.
        plain = torch.zeros_like(z).scatter(-1, z.topk(K, -1).indices, 1.0) > 0
        moved += int(((got != 0) & ~plain).any(-1).sum())
    assert moved > 0
    with pytest.raises(GradientRequiredError, match="grad=g"):
        sae.encode(x)


def test_the_cache_is_gradient_aware_and_the_weights_get_no_gradient(
        subject_tokenizer, toy_corpus, tmp_path):
    model = subject_model(subject_tokenizer).to(torch.float64)
    sae = random_gsae()
    corpus = toy_corpus[:30]
    cache = build_activation_cache(Subject.of(model, sae), corpus, None,
                                   CacheConfig(cache_dir=tmp_path, shard_tokens=100,
                                               batch_size=7), progress=False)
    assert cache.n_shards > 1 and cache.meta["key"]["gradient"] == {
        "loss": "next_token_ce_sum", "abs": True}
    assert all(p.grad is None for p in model.parameters())
    contexts = cache.contexts(range(cache.n_contexts))
    assert len({len(c) for c in contexts.values()}) > 1  # padding in the batches
    got = {}
    for f in range(D_SAE):
        ctx, pos, val = cache.feature_activations(f)
        for c, p, v in zip(ctx.tolist(), pos.tolist(), val.tolist(), strict=True):
            got[(c, p, f)] = v
    want = {}
    for c, ids in contexts.items():  # BOS first: the cache's own contexts
        x, g = _direct(model, sae, ids)
        acts, _ = _by_hand(sae, x, g)
        for p, f in acts.nonzero().tolist():
            want[(c, p, f)] = float(acts[p, f].detach())
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-6, abs=1e-6)  # stored as float32


def test_a_saved_gsae_loads_as_a_gsae_with_the_same_encode(tmp_path):
    from sae_lens import SAE

    sae = random_gsae()
    sae.save_model(tmp_path / "g")
    back = SAE.load_from_disk(tmp_path / "g", dtype="float64")
    assert type(back).__name__ == "GSAE" and back.cfg.k == K and back.cfg.gradient_abs
    x = torch.randn(5, D_MODEL, dtype=torch.float64)
    g = torch.randn(5, D_MODEL, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(x, grad=g), sae.encode(x, grad=g), rtol=0,
                                   atol=0)
    _, config = gsae_classes()
    with pytest.raises(ValueError, match="gradient_loss"):
        config(d_in=4, d_sae=8, gradient_loss="mse")
    with pytest.raises(ValueError, match="normalize_activations"):
        config(d_in=4, d_sae=8, normalize_activations="layer_norm")


def test_a_hook_z_gsae_selects_on_the_flattened_heads():
    from sae_lens.saes.sae import SAEMetadata

    gsae, config = gsae_classes()
    sae = gsae(config(d_in=8, d_sae=16, k=2, dtype="float64", reshape_activations="hook_z",
                      metadata=SAEMetadata(hook_name="blocks.0.attn.hook_z")))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(5, 2, 4, generator=g, dtype=torch.float64)  # [tokens, heads, d_head]
    grad = torch.randn(5, 2, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = sae.encode(x, grad=grad)
    z = (x.reshape(5, 8) - sae.b_dec) @ sae.W_enc + sae.b_enc
    score = z * (grad.reshape(5, 8) @ sae.W_dec.T).abs()
    idx = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :2]
    want = torch.zeros_like(z).scatter(-1, idx, z.gather(-1, idx).relu())
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-12)


def decoy_gsae(dtype=torch.float64):
    """Latent 0 is a decoy: a small constant pre-activation (0.1) and a zero decoder row, so
    its score z·|W_decᵀ g| is 0 everywhere and the gradient rule never picks it while latents
    1-4 (pre-activation about 1, random decoder rows) score above 0. k = 2."""
    from sae_lens.saes.sae import SAEMetadata

    gsae, config = gsae_classes()
    sae = gsae(config(d_in=D_MODEL, d_sae=5, k=2, dtype=str(dtype).split(".")[-1],
                      metadata=SAEMetadata(hook_name="blocks.1.hook_resid_pre",
                                           context_size=32, prepend_bos=True)))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        sae.W_enc.copy_(0.01 * torch.randn(D_MODEL, 5, generator=g, dtype=dtype))
        sae.W_enc[:, 0] = 0.0
        sae.b_enc.copy_(torch.tensor([0.1, 1.0, 1.0, 1.0, 1.0], dtype=dtype))
        sae.W_dec.copy_(torch.randn(5, D_MODEL, generator=g, dtype=dtype))
        sae.W_dec[0] = 0.0
        sae.b_dec.zero_()
    return sae


def test_context_ends_do_not_pick_latents_by_index(subject64, toy_corpus, tmp_path):
    """The last position of a context feeds no prediction: its gradient is exactly 0, every
    score is 0, and ranked by index the decoy (latent 0) would fire on every context end.
    Ties go to the larger z (TopK's choice): the decoy never fires."""
    sae = decoy_gsae()
    corpus = toy_corpus[:20]
    cache = build_activation_cache(Subject.of(subject64, sae), corpus, None,
                                   CacheConfig(cache_dir=tmp_path, batch_size=7),
                                   progress=False)
    assert cache.n_contexts == 20
    assert cache.feature_activations(0)[0].numel() == 0  # the decoy never fires
    ends = 0
    for c, ids in cache.contexts(range(cache.n_contexts)).items():
        x, g = _direct(subject64, sae, ids)
        assert bool((g[-1] == 0).all()) and bool((g[:-1] != 0).any(-1).all())
        z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        score = z * (g @ sae.W_dec.T).abs()
        by_index = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :2]
        # The rule this replaces: the decoy is picked at the context's end, and only there.
        assert [p for p in range(len(ids)) if 0 in by_index[p]] == [len(ids) - 1]
        ends += 1
        want, _ = _by_hand(sae, x, g, k=2)
        ctx, pos, val = (t.tolist() for t in cache.feature_activations(1))
        got = {p: v for cc, p, v in zip(ctx, pos, val, strict=True) if cc == c}
        assert got == pytest.approx({p: float(want[p, 1]) for p in range(len(ids))
                                     if want[p, 1] != 0}, rel=1e-6)
    assert ends == 20


def test_supplied_gradient_lets_saelens_splice_a_gsae(subject64, subject_tokenizer,
                                                      toy_corpus):
    """`GSAE.forward` (SAELens's splicing) needs a gradient: outside `supplied_gradient` it
    raises and names it; inside, the spliced run gives the cache's activations exactly."""
    from sae_lens import HookedSAETransformer

    spliced = HookedSAETransformer(subject64.cfg, tokenizer=subject_tokenizer)
    spliced.load_state_dict(subject64.state_dict())
    sae = random_gsae()
    ids = [subject_tokenizer.bos_token_id] + subject_tokenizer(toy_corpus[0])["input_ids"]
    tokens = torch.tensor([ids])
    with pytest.raises(GradientRequiredError, match="supplied_gradient"):
        spliced.run_with_saes(tokens, saes=[sae])
    with supplied_gradient(sae, spliced, tokens) as grad:
        _, cache = spliced.run_with_cache_with_saes(tokens, saes=[sae])
        with pytest.raises(GradientRequiredError, match="other tokens"):
            spliced.run_with_saes(tokens[:, :-1], saes=[sae])
    assert grad.shape == (1, len(ids), D_MODEL)
    x, g = _direct(subject64, sae, ids)
    want, _ = _by_hand(sae, x, g)
    got = cache["blocks.1.hook_resid_pre.hook_sae_acts_post"][0]
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-12)
    assert sae.supplied_grad is None  # the block lends it only while it runs
    with pytest.raises(TypeError, match="g-SAEs"):
        with supplied_gradient(planted_sae(), spliced, tokens):
            pass


@pytest.mark.slow
def test_label_features_on_a_gsae_recovers_the_planted_concept(subject, toy_corpus,
                                                                toy_evaluator, tmp_path):
    from saelens_tokenlabel import LabelConfig

    sae = planted_gsae(k=2)
    labels = sae.label_features(subject, toy_evaluator, toy_corpus, features=[ANIMAL_FEATURE],
                                config=LabelConfig(), cache=CacheConfig(cache_dir=tmp_path))
    assert labels[ANIMAL_FEATURE].label == "animal"


@pytest.mark.slow
def test_tokenlabel_label_on_a_gsae_folder(subject, toy_corpus, tmp_path, capsys):
    """The command line on a saved g-SAE: the folder loads as a GSAE, the cache runs its
    gradient-aware path, and every label gets a steering score."""
    from saelens_tokenlabel import save_local_model
    from saelens_tokenlabel.cli import main
    from saelens_tokenlabel.run import load_labelset

    sae_dir, model_dir = tmp_path / "gsae", tmp_path / "model"
    planted_gsae(k=2).save_model(sae_dir)
    save_local_model(subject, model_dir)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:80]) + "\n")
    assert main(["label", "--sae-path", str(sae_dir), "--model", str(model_dir), "--corpus",
                 str(corpus), "--features", "0:2", "--evaluator", "toy", "--out",
                 str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--device",
                 "cpu", "--no-score", "coherence"]) == 0
    labels = load_labelset(tmp_path / "out")
    assert labels[ANIMAL_FEATURE].label == "animal"
    # The planted digit feature: this corpus writes numbers as digits only, so "number" and
    # "digit" tell its examples apart equally well.
    assert labels[1].label in ("digit", "number")
    for f in (0, 1):
        assert isinstance(labels[f].metrics["steering_score"], float)
    cache_meta = next((tmp_path / "cache").rglob("meta.json")).read_text()
    assert '"gradient"' in cache_meta
    assert main(["status", str(tmp_path / "out")]) == 0
    assert "steering" in capsys.readouterr().out
