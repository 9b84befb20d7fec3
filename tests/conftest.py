"""Shared fixtures, and the test tiers.

`pytest` runs the fast tier: tests marked `slow`, `browser`, `ray` or `subprocess` (see
``[tool.pytest.ini_options] markers`` in pyproject.toml) are deselected. `pytest --full` runs
every test (CI does, with ``TOKENLABEL_REQUIRE_BROWSER=1``). A tiered test still runs when
its file or id is named on the command line, or when `-m` picks tests by marker
(``pytest -m ray``); ``TOKENLABEL_REQUIRE_BROWSER=1`` keeps the browser tier in.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from saelens_tokenlabel import Evaluator

from .builders import tiny_bridge, tiny_hf_llama, tiny_llama, train_tokenizer
from .sae.planted import (
    CHINESE_SENTENCES,
    planted_sae,
    subject_model,
    toy_sentences,
    train_subject_tokenizer,
)

warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")
# Two threads (the CI machine's cores), fewer when OMP_NUM_THREADS asks for fewer.
torch.set_num_threads(max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2")))))

TIERS = ("slow", "browser", "ray", "subprocess")
REQUIRE_BROWSER = "TOKENLABEL_REQUIRE_BROWSER"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true",
                     help=f"run every test, the {', '.join(TIERS)} tiers included (as CI does)")


def _deselected_tiers(config: pytest.Config) -> set[str]:
    if config.getoption("--full") or config.getoption("markexpr"):
        return set()
    tiers = set(TIERS)
    if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
        tiers.discard("browser")  # a required browser must be tried, so that it can fail
    return tiers


def pytest_report_header(config: pytest.Config) -> str:
    tiers = _deselected_tiers(config)
    if not tiers:
        return "test tier: full"
    return (f"test tier: fast (deselects {', '.join(sorted(tiers))}; "
            "`pytest --full` runs every test)")


def _named_files(config: pytest.Config) -> set[Path]:
    """Test files named on the command line (``path`` or ``path::test``), not folders."""
    root = config.invocation_params.dir
    out = set()
    for arg in config.args:
        path = (root / arg.split("::")[0]).resolve()
        if path.is_file():
            out.add(path)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers = _deselected_tiers(config)
    if not tiers:
        return
    named = _named_files(config)
    keep, drop = [], []
    for item in items:
        tiered = any(item.get_closest_marker(t) for t in tiers)
        (drop if tiered and item.path.resolve() not in named else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_evaluator(tokenizer) -> Evaluator:
    """Random float64 Llama-shaped evaluator: for exactness tests, not for label quality."""
    return Evaluator(tiny_llama(tokenizer))


@pytest.fixture(scope="session")
def bridge_evaluator(tokenizer, tmp_path_factory) -> Evaluator:
    """The same shape as `tiny_evaluator`, as a TransformerLens 3 `TransformerBridge` booted
    from a random-weight Hugging Face Llama saved in-test (float64)."""
    return Evaluator(tiny_bridge(tiny_hf_llama(tokenizer, tmp_path_factory.mktemp("hf"))))


@pytest.fixture(scope="session", params=["hooked", "bridge"])
def any_evaluator(request) -> Evaluator:
    """`tiny_evaluator` and `bridge_evaluator` in turn: the exactness tests run on both."""
    return request.getfixturevalue("tiny_evaluator" if request.param == "hooked"
                                   else "bridge_evaluator")


@pytest.fixture(scope="session")
def toy_evaluator() -> Evaluator:
    """The trained toy evaluator shipped with the package (really classifies)."""
    from saelens_tokenlabel.toy import load_toy_evaluator

    return load_toy_evaluator(device="cpu")


@pytest.fixture(scope="session")
def subject_tokenizer(tmp_path_factory):
    """GPT-2-like byte-level BPE, trained in-test (not the evaluator's tokenizer)."""
    return train_subject_tokenizer(tmp_path_factory.mktemp("subject_tok"))


@pytest.fixture(scope="session")
def subject(subject_tokenizer):
    """Tiny subject model whose embedding marks the planted tokens."""
    return subject_model(subject_tokenizer)


@pytest.fixture(scope="session")
def toy_corpus() -> list[str]:
    return toy_sentences(120, seed=0)


@pytest.fixture(scope="session")
def fast_evaluator(tokenizer):
    """A random tiny evaluator (float32, one-line system prompt): for tests of the plumbing,
    where label quality does not matter and speed does."""
    from saelens_tokenlabel import PromptTemplate

    return Evaluator(tiny_llama(tokenizer, dtype=torch.float32),
                     template=PromptTemplate(system="Rate the word."), name="tiny-random")


@pytest.fixture(scope="session")
def quick_labels(subject, toy_corpus, fast_evaluator, tmp_path_factory):
    """Labels of features 0-3 of the planted SAE from a few steps with the random tiny
    evaluator: real LabelResults (and a dead feature) for the storage and export tests."""
    from saelens_tokenlabel import LabelConfig
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig

    return label_sae_features(
        planted_sae(), subject, fast_evaluator, toy_corpus + list(CHINESE_SENTENCES),
        [0, 1, 2, 3],
        LabelConfig(steps=3, batch_size=6),
        cache=CacheConfig(cache_dir=tmp_path_factory.mktemp("quick_cache")),
        examples=ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4),
        # Detection scores only: the export tests add coherence and steering themselves.
        scores=ScoreConfig(scorers=("output_side",)),
    )


@pytest.fixture(scope="session")
def fault_world(subject, fast_evaluator, tmp_path_factory):
    """The reliability tests' finished `tokenlabel label` run of the planted SAE, its inputs
    saved as folders (`tests/faults.py`); tests damage copies of it, never it."""
    from .faults import make_world

    return make_world(tmp_path_factory.mktemp("fault_world"), subject, fast_evaluator)
