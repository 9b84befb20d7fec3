"""A real labeling run of the planted SAE, for the comparison tests: features 0 (animals),
1 (digits), 2 (dead), 3 (two Chinese characters) and 4 (a random direction), labeled by the
toy evaluator into a run folder, with the subject tokenizer saved beside it. About 3 s on a
2-core CPU; the tests build it once per module."""

from __future__ import annotations

from pathlib import Path

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig

from .planted import (
    CHINESE_SENTENCES,
    planted_sae,
    subject_model,
    toy_sentences,
    train_subject_tokenizer,
)

FEATURES = [0, 1, 2, 3, 4]
EXPLANATIONS = {
    0: "animal",                                # right: the planted concept, our label's token
    1: "color",                                 # wrong: another concept
    3: "Chinese characters for cat and dog",    # a sentence (14 evaluator tokens)
    4: "food",                                  # wrong
}
"""The hand-written explanations: features 0 (right), 1 and 4 (wrong), 3 (a sentence)."""
LATER = {0: "color"}
"""A second explanation of feature 0, after the first: "first by file order" drops it."""


def labeled_run(directory: Path, evaluator) -> tuple[Path, Path]:
    """Label `FEATURES` into ``directory/run``; returns the run folder and the folder holding
    the subject tokenizer (what ``tokenlabel compare --model`` takes)."""
    tok_dir = directory / "subject_tokenizer"
    subject = subject_model(train_subject_tokenizer(tok_dir))
    run_dir = directory / "run"
    label_sae_features(
        planted_sae(), subject, evaluator, toy_sentences(120, seed=0) + list(CHINESE_SENTENCES),
        # Seed 7: feature 4 (a random direction) gets "color", which beats chance on its
        # held-out examples where the wrong explanation "food" does not, whichever way
        # float32 rounds the prefix pass (TransformerLens's modules or the lean forward).
        # With seed 0 its label was a near tie between the two that the rounding decided.
        FEATURES, LabelConfig(lr=1.0, steps=80, batch_size=16, threshold=0.0, seed=7),
        cache=CacheConfig(cache_dir=directory / "cache"),
        examples=ExampleConfig(n_top=12, n_quantile=12, n_random=16, n_near_miss=12),
        run_dir=run_dir, scores=ScoreConfig(scorers=("output_side",)), progress=False)
    return run_dir, tok_dir
