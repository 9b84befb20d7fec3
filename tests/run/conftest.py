"""The SAE tests' offline fixtures (tiny subject model, planted SAE, random tiny evaluator),
shared with the run tests."""

from ..sae.conftest import fast_evaluator, subject, subject_tokenizer, toy_corpus

__all__ = ["fast_evaluator", "subject", "subject_tokenizer", "toy_corpus"]
