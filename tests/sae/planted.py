"""Offline builders for the SAE tests. They live in the package
(`saelens_tokenlabel.toy.planted`) so the tutorials can use them too; this module re-exports
them under the names the tests import."""

from __future__ import annotations

from saelens_tokenlabel.toy.planted import (
    ANIMAL_FEATURE,
    CHINESE_ACTIVE,
    CHINESE_FEATURE,
    CHINESE_SENTENCES,
    D_MODEL,
    D_SAE,
    DEAD_FEATURE,
    DIGIT_FEATURE,
    ENDOFTEXT,
    HOOK,
    MODEL_NAME,
    NEURONPEDIA_ID,
    SLOTS,
    TEMPLATES,
    expected_activations,
    planted_sae,
    planted_tokens,
    single_token,
    subject_model,
    toy_sentences,
    train_subject_tokenizer,
)


def planted_gsae(k: int = 2, hook: str = HOOK, **metadata):
    """The planted SAE's weights as a g-SAE (`sae.gsae.GSAE`) of sparsity `k`: on a planted
    token its own feature has the largest pre-activation, so it is selected unless the
    gradient weighs another latent more."""
    import torch

    from saelens_tokenlabel.sae.gsae import gsae_classes

    plain = planted_sae(hook, **metadata)
    gsae, config = gsae_classes()
    sae = gsae(config(d_in=D_MODEL, d_sae=D_SAE, k=k, metadata=plain.cfg.metadata))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(plain, name))
    return sae


__all__ = [
    "ANIMAL_FEATURE",
    "CHINESE_ACTIVE",
    "CHINESE_FEATURE",
    "CHINESE_SENTENCES",
    "DEAD_FEATURE",
    "DIGIT_FEATURE",
    "D_MODEL",
    "D_SAE",
    "ENDOFTEXT",
    "HOOK",
    "MODEL_NAME",
    "NEURONPEDIA_ID",
    "SLOTS",
    "TEMPLATES",
    "expected_activations",
    "planted_gsae",
    "planted_sae",
    "planted_tokens",
    "single_token",
    "subject_model",
    "toy_sentences",
    "train_subject_tokenizer",
]
