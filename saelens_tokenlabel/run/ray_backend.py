"""Label batches of features on Ray actors: one per GPU, each holding the evaluator once.

The driver (the process that called `label_sae_features`) keeps the activation cache, renders
each batch's examples into `FeatureData`, sends the batch to the least busy actor, and writes
what comes back into the run store. So the store has one writer, and a run restarted on
another cluster resumes from it like any other run.

Ray is imported only here, and only when a run asks for it (``pip install ".[ray]"``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..serial import Config

if TYPE_CHECKING:
    from ..config import LabelConfig
    from ..data import FeatureData
    from ..evaluator import Evaluator
    from ..result import LabelResult

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


def is_ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


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
    """A Ray actor's state: the evaluator (loaded once) and the label config."""

    def __init__(self, loader: Callable[[], Evaluator] | None, evaluator: Evaluator | None,
                 config: LabelConfig) -> None:
        import torch

        self.evaluator = loader() if loader is not None else evaluator
        if self.evaluator is None:
            raise ValueError("LabelWorker needs an evaluator or an evaluator_loader")
        self.config = config
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; torch may have read it before, so
        # say it again.
        n = os.environ.get("OMP_NUM_THREADS")
        if n and n.isdigit():
            torch.set_num_threads(int(n))

    def label(self, datas: list[FeatureData], kwargs: dict[str, Any]) -> list[LabelResult]:
        from .pipeline import label_batch

        return label_batch(datas, self.evaluator, self.config, **kwargs)

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


def label_on_ray(batches: Iterable[Any], evaluator: Evaluator, config: LabelConfig,
                 rc: RayConfig, sink: Any) -> None:
    """Label prepared batches (see `run.pipeline._prepared_batches`) on Ray actors; every
    result goes to `sink` (the run store) as its batch comes back. Stops sending batches at
    the first failed one, stores what the others finish, then raises that failure."""
    ray = _import_ray()
    from .pipeline import finish_batch

    started_here = False
    if not ray.is_initialized():
        address = None if rc.address in (None, LOCAL) else rc.address
        # A private instance needs no dashboard; a cluster keeps the one it was started with.
        kwargs = {"include_dashboard": False} if address is None else {}
        ray.init(address=address, **{**kwargs, **rc.init_kwargs})
        started_here = True
    actors: list[Any] = []
    try:
        n, num_gpus = _resources(ray, rc)
        actor_cls = ray.remote(num_gpus=num_gpus, num_cpus=rc.num_cpus)(LabelWorker)
        shipped = None if rc.evaluator_loader is not None else ray.put(evaluator)
        actors = [actor_cls.remote(rc.evaluator_loader, shipped, config) for _ in range(n)]
        # Fail early (and clearly) when an actor cannot build its evaluator.
        ray.get([a.ping.remote() for a in actors])
        log.info("labeling on %d Ray actors (%g GPUs each)", n, num_gpus)

        in_flight: dict[Any, tuple[int, list[int], Any]] = {}
        load = [0] * n
        failure: BaseException | None = None

        def collect(block: bool) -> None:
            nonlocal failure
            if not in_flight:
                return
            refs = list(in_flight)
            done, _ = ray.wait(refs, num_returns=1, timeout=None if block else 0)
            for ref in done:
                i, feats, ready = in_flight.pop(ref)
                load[i] -= 1
                try:
                    results = ray.get(ref)
                except Exception as err:  # the actor's error, or its death
                    sink.fail(feats, err)
                    failure = failure or err
                    continue
                sink.put(finish_batch(results, ready))

        for group, failed, ready, kwargs in batches:
            sink.start(group)
            sink.put(failed)
            if not ready:
                continue
            while in_flight and min(load) >= rc.max_in_flight:
                collect(block=True)
            collect(block=False)
            if failure is not None:
                break  # this batch never ran: it stays "running", so a rerun labels it
            i = load.index(min(load))
            log.debug("features %s -> actor %d", [int(d.name) for d, _ in ready], i)
            ref = actors[i].label.remote([d for d, _ in ready], kwargs)
            in_flight[ref] = (i, [int(d.name) for d, _ in ready], ready)
            load[i] += 1
        while in_flight:
            collect(block=True)
        if failure is not None:
            raise failure
    finally:
        for a in actors:
            ray.kill(a)
        if started_here:
            ray.shutdown()
