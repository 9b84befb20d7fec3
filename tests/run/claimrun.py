"""One labeling run on saved toy inputs, the same in a child process and in the test: the
claim and resume tests start it in subprocesses (``python -m tests.run.claimrun ...``) and
compare with runs in the test process."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

FEATURES = [0, 1, 2, 3, 4, 5]


def save_inputs(tmp: Path, subject: Any, corpus: list[str]) -> None:
    """The planted SAE, the subject model and the corpus, where `run` loads them."""
    from saelens_tokenlabel import save_local_model
    from saelens_tokenlabel.toy.planted import planted_sae

    planted_sae().save_model(tmp / "sae")
    save_local_model(subject, tmp / "model")
    (tmp / "corpus.txt").write_text("\n".join(corpus) + "\n")


def run(tmp: Path, out: Path | None, **options: Any) -> Any:
    """Label `FEATURES` of the saved inputs in `tmp` (run folder `out`)."""
    from sae_lens import SAE

    from saelens_tokenlabel import LabelConfig, load_local_model
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig
    from saelens_tokenlabel.toy import load_toy_evaluator

    sae = SAE.load_from_disk(tmp / "sae", device="cpu")
    model = load_local_model(tmp / "model", device="cpu")
    corpus = (tmp / "corpus.txt").read_text().splitlines()
    return label_sae_features(
        sae, model, load_toy_evaluator(device="cpu"), corpus, FEATURES,
        LabelConfig(lr=1.0, steps=6, batch_size=8, threshold=0.0),
        cache=CacheConfig(cache_dir=tmp / "cache"),
        examples=ExampleConfig(n_top=6, n_quantile=4, n_random=6, n_near_miss=4),
        features_per_batch=2, run_dir=out,
        scores=ScoreConfig(scorers=("output_side", "steering")), **options)


def _blocking_executor(started: Path) -> Any:
    """Labels nothing: says which features it was given (in `started`), then waits to be
    killed."""
    from saelens_tokenlabel.run.executors import LocalExecutor

    def label(batch: Any, evaluator: Any, config: Any) -> Any:
        started.write_text(" ".join(str(f) for f in batch.to_label))
        time.sleep(3600)

    return LocalExecutor(label=label)


if __name__ == "__main__":
    # python -m tests.run.claimrun TMP OUT LEASE_S [STARTED]: with STARTED, block in the
    # first batch (after claiming and starting it) until killed.
    tmp_, out_, lease = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    extra = {"executor": _blocking_executor(Path(sys.argv[4]))} if len(sys.argv) > 4 else {}
    run(tmp_, out_, lease_s=lease, **extra)
