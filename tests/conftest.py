from __future__ import annotations

import os
import warnings

import pytest
import torch

from saelens_tokenlabel import Evaluator

from .builders import tiny_llama, train_tokenizer

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
# Two threads (the CI machine's cores), fewer when OMP_NUM_THREADS asks for fewer.
torch.set_num_threads(max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2")))))


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
