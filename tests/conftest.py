from __future__ import annotations

import warnings

import pytest
import torch

from saelens_tokenlabel import Evaluator

from .builders import tiny_llama, train_tokenizer

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_evaluator(tokenizer) -> Evaluator:
    """Random float64 Llama-shaped evaluator: for exactness tests, not for label quality."""
    return Evaluator(tiny_llama(tokenizer))


@pytest.fixture(scope="session")
def toy_evaluator() -> Evaluator:
    """The trained toy evaluator shipped with the package (really classifies)."""
    from saelens_tokenlabel.toy import load_toy_evaluator

    return load_toy_evaluator(device="cpu")
