"""Label batches of features on Ray actors: one per GPU, each holding the evaluator once.

The driver (the process that called `label_sae_features`) keeps the activation cache, renders
each batch's examples into a `LabelBatch`, sends the batch to the least busy actor, and writes
what comes back into the run store. So the store has one writer per run process, and a run
restarted on another cluster resumes from it like any other run. The driver's claims stay
renewed while it waits on its actors (`ray.wait`): the heartbeat is a thread of the driver
(`run.claims.Heartbeat`), not a step of the descent. Like `LocalExecutor`, this executor sees
only the seam (`batch.py`, `verify.py`), never `sae/`.

An amortised run holds the actors for the whole run (`RayExecutor.pool`, a `Pool`): its
descents and its verifications (`VerifyBatch`: one group of features per call) go to them as
the rounds make them, and the driver keeps the map and the rounds. When the pool closes it
logs the actors' busy fraction (`RayExecutor.stats`): the share of the pool's lifetime they
spent labeling or verifying.

Ray is imported only here, and only when a run asks for it (``pip install ".[ray]"``).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..descent.batch import LabelBatch, LabelFn, ResultSink, label_batch
from ..descent.verify import Checked, VerifyBatch, verify_batch
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
    """Batches (or verification groups) queued per actor, so an actor has the next one when
    it finishes one."""
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

        loaded = loader() if loader is not None else evaluator
        if loaded is None:
            raise ValueError("LabelWorker needs an evaluator or an evaluator_loader")
        self.evaluator: Evaluator = loaded
        self.config = config
        self._label = label
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; torch may have read it before, so
        # say it again.
        n = os.environ.get("OMP_NUM_THREADS")
        if n and n.isdigit():
            torch.set_num_threads(int(n))
        self.busy_s = 0.0
        self.calls = 0

    def label(self, batch: LabelBatch) -> list[LabelResult]:
        t = time.perf_counter()
        try:
            return self._label(batch, self.evaluator, self.config)
        finally:
            self._count(t)

    def verify(self, batch: VerifyBatch) -> Checked:
        t = time.perf_counter()
        try:
            return verify_batch(batch, self.evaluator, self.config)
        finally:
            self._count(t)

    def _count(self, since: float) -> None:
        self.busy_s += time.perf_counter() - since
        self.calls += 1

    def stats(self) -> dict[str, float]:
        """Seconds spent labeling or verifying, and calls, since the actor started."""
        return {"busy_s": self.busy_s, "calls": self.calls}

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
        self.stats: dict[str, Any] = {}
        """The last pool's actors: ``busy_fraction`` (their labeling and verifying time over
        their number times the pool's lifetime), ``busy_s`` and ``calls`` per actor,
        ``wall_s``."""

    def run(self, batches: Iterable[LabelBatch], evaluator: Evaluator, config: LabelConfig,
            sink: ResultSink) -> None:
        with self.pool(evaluator, config, sink) as pool:
            pool.run(batches)

    @contextmanager
    def pool(self, evaluator: Evaluator, config: LabelConfig, sink: ResultSink
             ) -> Iterator[_Dispatch]:
        """The actors, started once for the ``with`` block, as a `Pool`; killed (and a Ray
        instance started here shut down) when it ends."""
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
            t0 = time.perf_counter()
            yield _Dispatch(ray, actors, rc.max_in_flight, sink)
            self._busy(ray, actors, time.perf_counter() - t0)
        finally:
            for a in actors:
                ray.kill(a)
            if started_here:
                ray.shutdown()

    def _busy(self, ray: Any, actors: list[Any], wall_s: float) -> None:
        per = ray.get([a.stats.remote() for a in actors])
        busy = sum(p["busy_s"] for p in per)
        self.stats = {"busy_fraction": busy / max(wall_s * len(actors), 1e-9),
                      "busy_s": [p["busy_s"] for p in per], "calls": [p["calls"] for p in per],
                      "wall_s": wall_s}
        log.info("Ray actors busy %.0f%% of %.1f s (%s calls each)",
                 100 * self.stats["busy_fraction"], wall_s,
                 ", ".join(str(p["calls"]) for p in per))

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


@dataclass
class _Task:
    """One actor call: a batch to label or a group to verify, and what the driver does with
    what comes back."""

    features: list[int]
    """What it labels or verifies (told to the sink if it fails)."""
    call: Callable[[Any], Any]
    """Sends it to an actor: returns the call's object ref."""
    done: Callable[[Any], None]
    """Handles the call's value on the driver."""


class _Dispatch:
    """Tasks to the least busy actor, at most `max_in_flight` queued per actor: the `Pool`
    of `RayExecutor`. A task's callback may submit more (a verification its descent); those
    wait in a queue until an actor has room."""

    def __init__(self, ray: Any, actors: list[Any], max_in_flight: int,
                 sink: ResultSink) -> None:
        self.ray, self.actors, self.max_in_flight, self.sink = ray, actors, max_in_flight, sink
        self.in_flight: dict[Any, tuple[int, _Task]] = {}
        self.load = [0] * len(actors)
        self.queue: deque[_Task] = deque()
        self.failure: BaseException | None = None
        self._handling = False

    def run(self, batches: Iterable[LabelBatch]) -> None:
        """Label every batch; stop sending at the first failure, then raise it."""
        for batch in batches:
            self.descend(batch, check=False)
            if self.failure is not None:
                break  # batches never sent stay "running", so a rerun labels them
        self.drain()

    # ------------------------------------------------------------------ the Pool
    def descend(self, batch: LabelBatch, check: bool = True) -> None:
        if check and not self._handling:
            self._raise()
        self.sink.start(batch.features)
        self.sink.put(batch.done)
        if not batch.prepared:
            return
        log.debug("features %s -> label", batch.to_label)
        self._submit(_Task(batch.to_label,
                           lambda actor: actor.label.remote(batch.for_worker()),
                           lambda results: self.sink.put(batch.finish(results))))

    def verify(self, batch: VerifyBatch, then: Callable[[Checked], None]) -> None:
        if not self._handling:
            self._raise()
        log.debug("features %s -> verify", batch.features)
        self._submit(_Task(batch.features, lambda actor: actor.verify.remote(batch), then))

    def wait(self) -> bool:
        if not self.in_flight:
            return False
        self.collect(block=True)
        self._pump()
        self._raise()
        return True

    def drain(self) -> None:
        while self.in_flight:
            self.collect(block=True)
            self._pump()
        self._raise()

    # ------------------------------------------------------------------ inside
    def _raise(self) -> None:
        if self.failure is not None:
            self.queue.clear()  # never sent: their features stay unfinished for a rerun
            while self.in_flight:  # what the others finish is still kept
                self.collect(block=True)
            raise self.failure

    def _submit(self, task: _Task) -> None:
        if self.failure is not None:
            return  # never sent: its features stay unfinished for a rerun
        self.queue.append(task)
        if self._handling:
            return  # a callback's task: sent by the loop that called the callback
        self._pump()
        while self.queue and self.failure is None:
            self.collect(block=True)
            self._pump()

    def _pump(self) -> None:
        """Send queued tasks while an actor has room (and nothing has failed)."""
        while self.queue and self.failure is None:
            if self.in_flight and min(self.load) >= self.max_in_flight:
                return
            self.collect(block=False)
            if self.failure is not None:
                return
            task = self.queue.popleft()
            i = self.load.index(min(self.load))
            log.debug("features %s -> actor %d", task.features, i)
            self.in_flight[task.call(self.actors[i])] = (i, task)
            self.load[i] += 1

    def collect(self, block: bool) -> None:
        if not self.in_flight:
            return
        done, _ = self.ray.wait(list(self.in_flight), num_returns=1,
                                timeout=None if block else 0)
        for ref in done:
            i, task = self.in_flight.pop(ref)
            self.load[i] -= 1
            try:
                value = self.ray.get(ref)
            except Exception as err:  # the actor's error, or its death
                self.sink.fail(task.features, err)
                self.failure = self.failure or err
                continue
            self._handling = True
            try:
                task.done(value)
            finally:
                self._handling = False
