"""One amortised run of a small planted world, the same in a child process and in the test:
the Ray test starts it in a subprocess (``python -m tests.run.amortrun ...``) whose actors
block on one seed batch, kills that driver, and resumes the run in the test process."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any

WORLD = {"n_features": 24, "liars": 1, "seed": 3}
AMORTIZE = {"seed_features": 8, "min_train": 4, "chunk": 4, "candidates": 2, "refit_every": 2}
GROUP = 2  # features per descent batch and per verification group: several tasks per round


def world(folder: Path) -> Any:
    from saelens_tokenlabel.toy.world import WorldConfig, build_world

    return build_world(folder / "world", WorldConfig(**WORLD))


def ray_config(address: str | None = None) -> Any:
    from saelens_tokenlabel.run.ray_backend import RayConfig
    from saelens_tokenlabel.toy import load_toy_evaluator

    return RayConfig(address=address, num_workers=2,
                     evaluator_loader=functools.partial(load_toy_evaluator, device="cpu"))


def run(folder: Path, out: Path, amortize: dict[str, Any] | None = None, **options: Any) -> Any:
    """Label every feature of the world in `folder` into the run folder `out` (`amortize`:
    other `AMORTIZE` settings)."""
    from saelens_tokenlabel import AmortizeConfig, LabelConfig
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import CacheConfig, ScoreConfig
    from saelens_tokenlabel.toy import load_toy_evaluator

    w = world(folder)
    return label_sae_features(
        w.sae, w.subject, load_toy_evaluator(device="cpu"), list(w.corpus), None,
        LabelConfig(), cache=CacheConfig(cache_dir=folder / "cache"), run_dir=out,
        amortize=AmortizeConfig(**{**AMORTIZE, **(amortize or {})}), features_per_batch=GROUP,
        progress=False,
        scores=ScoreConfig(scorers=()), **options)


def blocking_label(sentinel: int, marker: str) -> Any:
    """A Ray actor's label function that labels every batch but the one holding `sentinel`:
    there it writes `marker` and waits to be killed."""
    from saelens_tokenlabel.descent.batch import label_batch

    def label(batch: Any, evaluator: Any, config: Any) -> Any:
        if sentinel in batch.to_label:
            Path(marker).write_text(" ".join(map(str, batch.to_label)))
            time.sleep(3600)
        return label_batch(batch, evaluator, config)

    return label


if __name__ == "__main__":
    # python -m tests.run.amortrun FOLDER OUT ADDRESS SENTINEL MARKER: join the Ray cluster
    # at ADDRESS and label, the actor that gets SENTINEL's seed batch blocking there.
    from saelens_tokenlabel.run.ray_backend import RayExecutor

    folder_, out_, address = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    label_fn = blocking_label(int(sys.argv[4]), sys.argv[5])
    run(folder_, out_, executor=RayExecutor(ray_config(address), label=label_fn))
