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
    "planted_sae",
    "planted_tokens",
    "single_token",
    "subject_model",
    "toy_sentences",
    "train_subject_tokenizer",
]
