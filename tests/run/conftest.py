"""The SAE tests' offline fixtures (tiny subject model, planted SAE, random tiny evaluator),
shared with the run tests."""

from ..sae.conftest import fast_evaluator, sae, subject, subject_tokenizer, toy_corpus

__all__ = ["fast_evaluator", "sae", "subject", "subject_tokenizer", "toy_corpus"]


def pytest_configure(config):
    # Until the markers are registered in pyproject.toml (another change): no warnings.
    for name, what in (("slow", "slow tests"), ("subprocess", "tests that start processes"),
                       ("ray", "tests that start Ray"), ("browser", "tests with a browser")):
        config.addinivalue_line("markers", f"{name}: {what}")
