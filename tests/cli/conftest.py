"""The SAE tests' offline fixtures (tiny subject model, planted SAE, random tiny evaluator) and
the report tests' toy labels, shared with the command-line tests."""

from ..report.conftest import toy_labels, toy_run_labels
from ..sae.conftest import fast_evaluator, subject, subject_tokenizer, toy_corpus

__all__ = ["fast_evaluator", "subject", "subject_tokenizer", "toy_corpus", "toy_labels",
           "toy_run_labels"]
