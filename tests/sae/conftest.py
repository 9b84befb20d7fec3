from __future__ import annotations

import pytest

from .planted import planted_sae


@pytest.fixture
def sae():
    """Hand-built SAE: feature 0 fires on animal words, 1 on digits, 2 never, 3 on two
    Chinese characters; 4.. random."""
    return planted_sae()


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "activations"
