"""Label batches of features on Ray actors: one per GPU, each holding the evaluator once.

The driver (the process that called `label_sae_features`) keeps the activation cache, renders
each batch's examples into a `LabelBatch`, sends the batch to the least busy actor, and writes
what comes back into the run store. So the store has one writer per run process, and a run
restarted on another cluster resumes from it like any other run. The driver's claims stay
renewed while it waits on its actors (`ray.wait`): the heartbeat is a thread of the driver
(`run.claims.Heartbeat`), not a step of the descent. Like `LocalExecutor`, this
executor sees only the seam (`batch.py`), never `sae/`.

Ray is imported only here, and only when a run asks for it (``pip install ".[ray]"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..descent.batch import LabelBatch, LabelFn, ResultSink, label_batch
from ..records.serial import Config

if TYPE_CHECKING:
    from ..evaluator.model import Evaluator
    from ..records.config import LabelConfig
    from ..records.result import LabelResult

log = logging.getLogger(__name__)
LOCAL = "local"


@dataclass
class RayConfig(Config):
    """Where and how the batches are labeled on Ray."""

    address: str | None = None
    """Cluster to join: ``"auto"`` (the one ``ray start`` set up on this node),
    ``"ray://host:10001"``, or None / ``"local"`` to start a private local instance (or use
    the one this process has already initialised)."""
    num_workers: int | None = None
    """Actors. None: one per GPU of the cluster; one on a cluster without GPUs."""
    num_gpus: float | None = None
    """GPUs per actor. None: 1 when the cluster has GPUs, else 0 (CPU actors)."""
    num_cpus: float = 1.0
    """CPUs per actor (also its torch thread count, as Ray sets OMP_NUM_THREADS)."""
    evaluator_loader: Callable[[], Evaluator] | None = None
    """Builds the evaluator inside each actor, e.g. ``functools.partial(load_evaluator,
    name)``, so that a large model is loaded from disk on its node and never pickled. None:
    the evaluator of the run is pickled once into Ray's object store and sent to each actor
    (right for small models)."""
    max_in_flight: int = 2
    """Batches queued per actor, so an actor has the next batch when it finishes one."""
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra ``ray.init`` arguments (e.g. ``num_cpus``, ``runtime_env``)."""

    def check(self) -> None:
        self.need(self.num_workers is None or self.num_workers >= 1,
                  f"num_workers must be >= 1, got {self.num_workers}")
        self.need(self.num_gpus is None or self.num_gpus >= 0,
                  f"num_gpus must be >= 0, got {self.num_gpus}")
        self.need(self.num_cpus > 0, f"num_cpus must be > 0, got {self.num_cpus}")
        self.need(self.max_in_flight >= 1, f"max_in_flight must be >= 1, got {self.max_in_flight}")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "Labeling on Ray needs the ray package: pip install 'saelens-tokenlabel[ray]' "
            "(or pip install 'ray[default]>=2.9')."
        ) from None
    return ray


class LabelWorker:
    """A Ray actor's state: the evaluator (loaded once), the label config and the function
    that labels a batch (`label_batch`, or a test's stand-in)."""

    def __init__(self, loader: Callable[[], Evaluator] | None, evaluator: Evaluator | None,
                 config: LabelConfig, label: LabelFn = label_batch) -> None:
        import torch

        self.evaluator = loader() if loader is not None else evaluator
        if self.evaluator is None:
            raise ValueError("LabelWorker needs an evaluator or an evaluator_loader")
        self.config = config
        self._label = label
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; torch may have read it before, so
        # say it again.
        n = os.environ.get("OMP_NUM_THREADS")
        if n and n.isdigit():
            torch.set_num_threads(int(n))

    def label(self, batch: LabelBatch) -> list[LabelResult]:
        return self._label(batch, self.evaluator, self.config)

    def ping(self) -> str:
        return str(self.evaluator.name)


def _resources(ray: Any, rc: RayConfig) -> tuple[int, float]:
    gpus = float(ray.cluster_resources().get("GPU", 0))
    num_gpus = rc.num_gpus if rc.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if rc.num_workers is not None:
        n = rc.num_workers
    else:
        n = int(gpus // num_gpus) if num_gpus else 1
    if n < 1:
        raise ValueError(f"The Ray cluster has {gpus:g} GPUs, fewer than the {num_gpus:g} "
                         "each actor asks for; pass RayConfig(num_gpus=...) or add GPUs.")
    if num_gpus and n * num_gpus > gpus:
        raise ValueError(f"{n} actors x {num_gpus:g} GPUs each need {n * num_gpus:g} GPUs; "
                         f"the Ray cluster has {gpus:g}. Pass fewer workers.")
    return n, num_gpus


class RayExecutor:
    """Label the batches on Ray actors (`RayConfig`); every result goes to the sink as its
    batch comes back. Stops sending batches at the first failed one, stores what the others
    finish, then raises that failure."""

    def __init__(self, rc: RayConfig | None = None, label: LabelFn = label_batch) -> None:
        self.rc = rc or RayConfig()
        self.label = label

    def run(self, batches: Iterable[LabelBatch], evaluator: Evaluator, config: LabelConfig,
            sink: ResultSink) -> None:
        ray = _import_ray()
        rc = self.rc
        started_here = False
        if not ray.is_initialized():
            address = None if rc.address in (None, LOCAL) else rc.address
            # A private instance needs no dashboard; a cluster keeps the one it was started
            # with.
            kwargs = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, **{**kwargs, **rc.init_kwargs})
            started_here = True
        actors: list[Any] = []
        try:
            actors = self._actors(ray, evaluator, config)
            _Dispatch(ray, actors, rc.max_in_flight, sink).run(batches)
        finally:
            for a in actors:
                ray.kill(a)
            if started_here:
                ray.shutdown()

    def _actors(self, ray: Any, evaluator: Evaluator, config: LabelConfig) -> list[Any]:
        rc = self.rc
        n, num_gpus = _resources(ray, rc)
        actor_cls = ray.remote(num_gpus=num_gpus, num_cpus=rc.num_cpus)(LabelWorker)
        shipped = None if rc.evaluator_loader is not None else ray.put(evaluator)
        actors = [actor_cls.remote(rc.evaluator_loader, shipped, config, self.label)
                  for _ in range(n)]
        try:
            # Fail early (and clearly) when an actor cannot build its evaluator.
            ray.get([a.ping.remote() for a in actors])
        except BaseException:
            for a in actors:
                ray.kill(a)
            raise
        log.info("labeling on %d Ray actors (%g GPUs each)", n, num_gpus)
        return actors


class _Dispatch:
    """Batches to the least busy actor, at most `max_in_flight` queued per actor."""

    def __init__(self, ray: Any, actors: list[Any], max_in_flight: int,
                 sink: ResultSink) -> None:
        self.ray, self.actors, self.max_in_flight, self.sink = ray, actors, max_in_flight, sink
        self.in_flight: dict[Any, tuple[int, LabelBatch]] = {}
        self.load = [0] * len(actors)
        self.failure: BaseException | None = None

    def run(self, batches: Iterable[LabelBatch]) -> None:
        for batch in batches:
            self.sink.start(batch.features)
            self.sink.put(batch.done)
            if not batch.prepared:
                continue
            while self.in_flight and min(self.load) >= self.max_in_flight:
                self.collect(block=True)
            self.collect(block=False)
            if self.failure is not None:
                break  # this batch never ran: it stays "running", so a rerun labels it
            i = self.load.index(min(self.load))
            log.debug("features %s -> actor %d", batch.to_label, i)
            ref = self.actors[i].label.remote(batch.for_worker())
            self.in_flight[ref] = (i, batch)
            self.load[i] += 1
        while self.in_flight:
            self.collect(block=True)
        if self.failure is not None:
            raise self.failure

    def collect(self, block: bool) -> None:
        if not self.in_flight:
            return
        done, _ = self.ray.wait(list(self.in_flight), num_returns=1,
                                timeout=None if block else 0)
        for ref in done:
            i, batch = self.in_flight.pop(ref)
            self.load[i] -= 1
            try:
                results = self.ray.get(ref)
            except Exception as err:  # the actor's error, or its death
                self.sink.fail(batch.to_label, err)
                self.failure = self.failure or err
                continue
            self.sink.put(batch.finish(results))
