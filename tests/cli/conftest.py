"""The SAE tests' offline fixtures (tiny subject model, planted SAE, random tiny evaluator) and
the report tests' toy labels, shared with the command-line tests."""

from ..report.conftest import toy_labels, toy_run_labels
from ..sae.conftest import sae

__all__ = ["sae", "toy_labels",
           "toy_run_labels"]
