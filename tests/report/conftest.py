from __future__ import annotations

import copy

import pytest

from saelens_tokenlabel import LabelConfig, LabelSet
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig
from saelens_tokenlabel.sae.scorers.apply import add_sae_scores
from saelens_tokenlabel.sae.subject import Subject

from ..sae.planted import (
    CHINESE_SENTENCES,
    planted_sae,
    subject_model,
    toy_sentences,
    train_subject_tokenizer,
)


@pytest.fixture(scope="session")
def toy_run_labels(toy_evaluator, tmp_path_factory) -> LabelSet:
    """A real run: the planted SAE's features 0-3 (animal, digit, dead, Chinese) labeled by the
    trained toy evaluator, with the SAE-side scores (output side, coherence) added. Do not
    mutate; take `toy_labels` for a copy."""
    d = tmp_path_factory.mktemp("report_run")
    subject = subject_model(train_subject_tokenizer(d / "tok"))
    sae = planted_sae()
    # One cheap restart, so that some results carry several attempts.
    config = LabelConfig(lr=1.0, steps=40, batch_size=16, threshold=0.0,
                         restarts=({"lr": 0.5, "seed": 1},))
    labels = label_sae_features(
        sae, subject, toy_evaluator, toy_sentences(120, seed=0) + list(CHINESE_SENTENCES),
        [0, 1, 2, 3], config, cache=CacheConfig(cache_dir=d / "cache"),
        examples=ExampleConfig(n_top=8, n_quantile=8, n_random=8, n_near_miss=8))
    return LabelSet(add_sae_scores(list(labels.values()), Subject.of(subject, sae)), labels.info)


@pytest.fixture
def toy_labels(toy_run_labels) -> LabelSet:
    return copy.deepcopy(toy_run_labels)
