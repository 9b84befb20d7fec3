"""The SAE tests' planted-SAE fixture, shared with the run tests (the subject model, corpus and
evaluators are in tests/conftest.py)."""

from ..sae.conftest import sae

__all__ = ["sae"]
