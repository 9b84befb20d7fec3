"""A TransformerBridge as the subject model: the activation cache reads the same activations
as from the HookedTransformer with the same weights (hook names, stop_at_layer, head index, BOS
and context size), and a whole run with bridges recovers the planted concepts."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saelens_tokenlabel.evaluator.backend import is_bridge
from saelens_tokenlabel.evaluator.loading import boot_bridge, hooked_to_hf_llama
from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject

from .planted import ANIMAL_FEATURE, DIGIT_FEATURE, planted_sae


@pytest.fixture(scope="module")
def bridge_subject(subject, subject_tokenizer):
    """The planted subject's weights in a Hugging Face Llama, booted as a bridge."""
    bridge = boot_bridge(hooked_to_hf_llama(subject), subject_tokenizer)
    assert is_bridge(bridge)
    return bridge


def _entries(cache, features):
    out = {}
    for f in features:
        ctx, pos, val = cache.feature_activations(f)
        out.update({(c, p, f): v for c, p, v in
                    zip(ctx.tolist(), pos.tolist(), val.tolist(), strict=True)})
    return out


def _head_sae(d_head: int) -> StandardSAE:
    sae = StandardSAE(StandardSAEConfig(d_in=d_head, d_sae=6, metadata=SAEMetadata(
        hook_name="blocks.1.attn.hook_z", hook_head_index=1, model_name="tiny-subject",
        context_size=12, prepend_bos=False)))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_head, 6, generator=torch.Generator().manual_seed(0)))
    return sae


@pytest.mark.parametrize("which", ["resid_layer1_bos", "head_z_no_bos"])
def test_bridge_subject_caches_the_hooked_subjects_activations(
        which, subject, bridge_subject, toy_corpus, tmp_path):
    if which == "resid_layer1_bos":  # stop_at_layer=1: block 0 runs, block 1 does not
        sae = planted_sae(hook="blocks.1.hook_resid_pre", context_size=10, prepend_bos=True)
    else:  # a per-head hook, no BOS, contexts cut at 12 tokens
        sae = _head_sae(subject.cfg.d_head)
    feats = list(range(int(sae.cfg.d_sae)))
    docs = toy_corpus[:30]
    hooked = build_activation_cache(Subject.of(subject, sae), docs, feats,
                                    CacheConfig(cache_dir=tmp_path / "h", batch_size=4))
    bridged = build_activation_cache(Subject.of(bridge_subject, sae), docs, feats,
                                     CacheConfig(cache_dir=tmp_path / "b", batch_size=4))
    assert bridged.n_contexts == hooked.n_contexts and bridged.n_tokens == hooked.n_tokens
    assert bridged.meta["context_size"] == hooked.meta["context_size"]
    assert bridged.meta["prepend_bos"] == hooked.meta["prepend_bos"]
    assert bridged.contexts(range(bridged.n_contexts)) == hooked.contexts(
        range(hooked.n_contexts))
    want, got = _entries(hooked, feats), _entries(bridged, feats)
    # fp32 models: the same arithmetic in another order (HF's kernels), so 1e-4, not 0.
    shared = want.keys() & got.keys()
    assert len(shared) > 0.98 * len(want.keys() | got.keys())
    assert all(abs(want[k]) < 1e-4 for k in want.keys() - shared)
    assert all(abs(got[k]) < 1e-4 for k in got.keys() - shared)
    assert max(abs(want[k] - got[k]) for k in shared) < 1e-4


def test_stop_at_layer_runs_no_block_past_the_hook_on_a_bridge(bridge_subject, toy_corpus,
                                                               tmp_path):
    calls = []
    handles = [bridge_subject.blocks[i].mlp.register_forward_pre_hook(
        lambda module, args, i=i: calls.append(i)) for i in (0, 1)]
    try:
        build_activation_cache(Subject.of(bridge_subject,
                                          planted_sae(hook="blocks.0.hook_resid_post")),
                               toy_corpus[:10], [0], CacheConfig(cache_dir=tmp_path))
    finally:
        for h in handles:
            h.remove()
    assert 0 in calls and 1 not in calls


@pytest.mark.slow
def test_bridges_as_subject_and_evaluator_recover_the_planted_concepts(
        bridge_subject, toy_corpus, tmp_path):
    from saelens_tokenlabel import LabelConfig
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import ScoreConfig
    from saelens_tokenlabel.toy import load_toy_evaluator

    evaluator = load_toy_evaluator(backend="bridge")
    assert evaluator.backend.kind == "bridge"
    labels = label_sae_features(
        planted_sae(), bridge_subject, evaluator, toy_corpus, [ANIMAL_FEATURE, DIGIT_FEATURE],
        LabelConfig(seed=0), cache=CacheConfig(cache_dir=tmp_path), progress=False,
        scores=ScoreConfig(scorers=("output_side",)))
    assert labels[ANIMAL_FEATURE].label == "animal"
    # The planted digit feature: this corpus writes numbers as digits only, so "number" and
    # "digit" tell its examples apart equally well (the default objective gave "number" here
    # before issue 21, "digit" since).
    assert labels[DIGIT_FEATURE].label in ("digit", "number")
    for f in (ANIMAL_FEATURE, DIGIT_FEATURE):
        assert labels[f].metrics["heldout_balanced_accuracy"] >= 0.9
