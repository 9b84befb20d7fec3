"""`RunOptions`: how `label_sae_features` runs (batching, where results go, order, Ray,
SAE-side scores, progress, claims), as opposed to what it computes (`LabelConfig`,
`CacheConfig`, `ExampleConfig`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..records.serial import Config
from .amortise.config import AmortizeConfig
from .claims import DEFAULT_LEASE_S

if TYPE_CHECKING:
    from ..sae.scorers.apply import ScoreConfig
    from .executors import Executor
    from .ray_backend import RayConfig
    from .store import RunStore

Order = Literal["index", "attribution"]
ORDERS = ("index", "attribution")


@dataclass
class RunOptions(Config):
    """The run options of `label_sae_features`; each is also one of its keyword arguments."""

    features_per_batch: int = 8
    """Features that share each optimisation (their rows share every forward pass)."""
    run_dir: str | Path | RunStore | None = None
    """A folder (the store is ``run_dir/run.sqlite``) or an open `RunStore`: every result is
    kept as soon as its batch is done; a rerun with the same inputs and settings skips
    finished features, one with others is an error; several processes on one folder split
    the features between them (claims, `lease_s`)."""
    checkpoint: str | Path | None = None
    """A JSON file (the older format), rewritten after every batch; with `run_dir` too it is
    only read, to seed the store."""
    order: Order = "index"
    """``"index"``, or ``"attribution"`` (largest attribution score first, see
    `saelens_tokenlabel.sae.attribution`)."""
    ray: RayConfig | str | bool | None = None
    """Label the batches on Ray actors (one per GPU): a `RayConfig`, an address (``"auto"``,
    ``"ray://..."``, ``"local"``) or True. None or False: in this process."""
    scores: ScoreConfig | None = None
    """The SAE-side scorers run on every result on the driver (default `ScoreConfig()`: the
    output side, reflective coherence and the steering score; see `sae.scorers`)."""
    progress: bool | None = None
    """Show a progress bar: True, False, or None (only on a terminal)."""
    lease_s: float = DEFAULT_LEASE_S
    """Seconds a claim on features lasts without a heartbeat (with `run_dir`). Heartbeats
    come at batch boundaries, so this must outlast one batch; a killed process's features
    are taken over by another process (or a rerun) once it has run out."""
    amortize: AmortizeConfig | None = None
    """Label most features by proposal instead of descent (`run.amortized`): an
    `AmortizeConfig`, or None (every feature by descent)."""
    executor: Executor | None = None
    """Who labels the prepared batches (`run.executors.Executor`): None for
    `LocalExecutor()`, or `RayExecutor` with `ray`. Tests pass one to inject failures."""

    def check(self) -> None:
        self.need(isinstance(self.features_per_batch, int) and self.features_per_batch >= 1,
                  f"features_per_batch must be >= 1, got {self.features_per_batch}")
        self.choice("order", ORDERS)
        self.need(self.amortize is None or isinstance(self.amortize, AmortizeConfig),
                  f"amortize must be an AmortizeConfig or None, got "
                  f"{type(self.amortize).__name__}")
        self.need(self.lease_s > 0, f"lease_s must be > 0 seconds, got {self.lease_s}")
        self.need(self.executor is None or hasattr(self.executor, "run"),
                  f"executor must have a run(batches, evaluator, config, sink) method, got "
                  f"{type(self.executor).__name__}")

    @classmethod
    def of(cls, options: RunOptions | None, overrides: dict[str, Any]) -> RunOptions:
        """`options` (default: all defaults) with keyword `overrides`; an unknown keyword is
        a one-line TypeError naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            valid = ", ".join(["cache", "examples", "options", *names])
            raise TypeError(f"label_sae_features() got unexpected keyword argument(s) "
                            f"{', '.join(unknown)}; valid keywords: {valid}.")
        if options is not None and not isinstance(options, RunOptions):
            raise TypeError(f"options must be a RunOptions, got {type(options).__name__}")
        return dataclasses.replace(options or cls(), **overrides)
