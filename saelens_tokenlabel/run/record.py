"""Where a run's results go and come from: `RunRecord` (the labels in memory, the run store
or the legacy JSON checkpoint, and this process's claims) and `RunSink`, the `ResultSink`
the executors report to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..formats.labelset import LabelSet
from ..records.config import LabelConfig
from ..records.errors import OutputNotWrittenError, RunStoreError
from ..records.result import LabelResult
from ..records.serial import Config
from ..sae.config import ExampleConfig
from .claims import Claimer
from .stops import deferred
from .store import Explain, RunStore, store_path

log = logging.getLogger(__name__)

IDENTITY_NAMES = {"identity": "another SAE, model, evaluator or corpus"}


class RecordOptions(Protocol):
    """What `open_record` reads of a run's options (`RunOptions` has them)."""

    @property
    def run_dir(self) -> str | Path | RunStore | None: ...

    @property
    def checkpoint(self) -> str | Path | None: ...

    @property
    def lease_s(self) -> float: ...

    @property
    def amortize(self) -> Config | None: ...


@dataclass
class _Binding:
    """What `RunRecord.bind` writes into the store once the inputs are known good."""

    path: Path
    bound: dict[str, Any]
    explain: Explain | None
    feats: list[int]
    lease_s: float


class RunRecord:
    """The results of one run as it goes: `labels` (memory), and `store` or `ckpt`."""

    def __init__(self, labels: LabelSet, store: RunStore | None, ckpt: Path | None,
                 claimer: Claimer | None, binding: _Binding | None = None) -> None:
        self.labels, self.store, self.ckpt, self.claimer = labels, store, ckpt, claimer
        self._binding = binding
        self.n_new = 0
        """Results labeled by this call (the sink counts them)."""

    def todo(self, feats: list[int]) -> list[int]:
        """Features not finished yet (by any process)."""
        return [f for f in feats if f not in self.labels]

    def bind(self, info: dict[str, Any] | None) -> None:
        """The inputs are known good (the activation cache is built): create the run store if
        this is the first start, bind it to these inputs and settings (a mismatch is an
        error), seed it from the checkpoint, register the features, record `info` (None: keep
        the checkpoint's), and start claiming (with a heartbeat). Before this, a failed start
        has written nothing."""
        b, self._binding = self._binding, None
        if b is not None:
            if self.store is None:
                self.store = RunStore(b.path)
            self.store.bind(b.bound, names=IDENTITY_NAMES, explain=b.explain)
            self.labels = _seed(self.store, self.labels, self.ckpt, b.feats)
            # The store (not the JSON file) is the record now; the file is written at the end.
            self.ckpt = None
            self.claimer = Claimer(self.store, b.lease_s)
            self.claimer.start_heartbeat()
        if info is not None:
            self.set_info(info)

    def set_info(self, info: dict[str, Any]) -> None:
        self.labels.info = info
        if self.store is not None:
            self.store.set_meta(info=info)

    def groups(self, todo: list[int], size: int) -> Iterator[list[int]]:
        """`todo` in groups of `size` to label here: claimed ones with a store (other
        processes may label the rest), else all of them."""
        if self.claimer is not None:
            yield from self.claimer.groups(todo, size)
            return
        for start in range(0, len(todo), size):
            yield todo[start : start + size]

    def result(self, feats: list[int]) -> LabelSet:
        """The requested features only (a store or checkpoint may hold more), with those
        that other processes labeled into the store."""
        if self.store is not None:
            missing = [f for f in feats if f not in self.labels]
            for r in self.store.results(missing) if missing else ():
                self.labels.add(r)
        labels = self.labels
        if set(labels) <= set(feats):
            return labels
        return LabelSet([labels[f] for f in feats if f in labels], labels.info)

    def note_saved(self, err: BaseException) -> None:
        """Say on `err` (an error, or a stop: `RunInterrupted`, KeyboardInterrupt) what was
        labeled before it and where it is kept; nothing when nothing is."""
        if isinstance(err, RunStoreError | OutputNotWrittenError):
            return  # its message says what is saved and how to go on
        stop = isinstance(err, KeyboardInterrupt)
        store, ckpt, n_new = self.store, self.ckpt, self.n_new
        finished: int | None = len(self.labels)
        if store is not None:
            try:
                finished = store.count_finished()
            except RunStoreError:
                finished = None
        if not (stop or n_new or finished):
            return  # an error before anything was labeled: its own message is all
        where = (store.path if store is not None else ckpt)
        saved = (f"{'those' if finished is None else finished} finished features are saved "
                 f"in {where} and a rerun of the same call resumes from there."
                 if where is not None else
                 "pass run_dir=<folder> to keep finished features across runs.")
        err.add_note(f"saelens_tokenlabel: {n_new} features were labeled before "
                     f"{'the stop' if stop else 'this error'}; {saved}")


@contextmanager
def _noted(record: RunRecord) -> Iterator[RunRecord]:
    """`record`, with what is saved noted on an error or a stop that ends the run."""
    try:
        yield record
    except BaseException as err:
        record.note_saved(err)
        raise


@contextmanager
def open_record(opts: RecordOptions, identity: dict[str, Any], config: LabelConfig,
                ex: ExampleConfig, feats: list[int], explain: Explain | None = None,
                earlier_identity: dict[str, Any] | None = None) -> Iterator[RunRecord]:
    """The run's record: the checkpoint read, and a run store that exists opened and checked
    against these inputs and settings (a mismatch is an error, before any work), its finished
    results read. Nothing is written until `RunRecord.bind`: a start that fails before it
    (an empty corpus, a model that does not load) leaves no store and no folder. On the way
    out this process's claims are released and a store opened here is closed. `explain`
    words a mismatch (`RunStore.check`); a store bound to `earlier_identity` (what an earlier
    version called these same inputs: a corpus file by its path and modification time) is
    rebound to `identity`."""
    labels = LabelSet()
    ckpt = Path(opts.checkpoint) if opts.checkpoint is not None else None
    if ckpt is not None:
        labels = load_checkpoint(ckpt, config, ex, identity)
    if opts.run_dir is None:
        with _noted(RunRecord(labels, None, ckpt, None)) as record:
            yield record
        return
    run_dir = opts.run_dir
    given = run_dir if isinstance(run_dir, RunStore) else None
    path = run_dir.path if isinstance(run_dir, RunStore) else store_path(run_dir)
    bound = {"identity": identity, "label_config": config.result_settings(),
             "example_config": ex.to_dict()}
    if opts.amortize is not None:
        # Another seed set or map would make another run.
        bound["amortize"] = opts.amortize.to_dict()
    store = given if given is not None else (RunStore(path) if path.is_file() else None)
    record = RunRecord(labels, store, ckpt, None,
                       _Binding(path, bound, explain, feats, opts.lease_s))
    try:
        if store is not None:
            if earlier_identity is not None and store.rebind("identity", earlier_identity,
                                                             identity):
                log.info("%s: the corpus is identified by its documents now", store.path)
            _read_old_example_config(store)
            store.check(bound, names=IDENTITY_NAMES, explain=explain)
            record.labels = _merged(store.labelset(), labels)
        with _noted(record):
            yield record
    finally:
        with deferred():  # a second signal must not leave the claims behind
            if record.claimer is not None:
                record.claimer.release()
            if given is None and record.store is not None:
                record.store.close()


def _read_old_example_config(store: RunStore) -> None:
    """A run stored before contrast examples existed recorded its `ExampleConfig` without
    ``n_contrast``: it was made with none (`ExampleConfig.from_stored`). Say so in the store,
    so that binding compares like with like (and names ``n_contrast`` when they differ)."""
    stored = store.get_meta("example_config")
    if isinstance(stored, dict) and "n_contrast" not in stored:
        store.set_meta(example_config=ExampleConfig.from_stored(stored).to_dict())


def _merged(stored: LabelSet, ckpt: LabelSet) -> LabelSet:
    """The store's results and info, with the checkpoint's results (and info) it lacks."""
    for f, r in ckpt.items():
        if f not in stored:
            stored.add(r)
    if not stored.info:
        stored.info = ckpt.info
    return stored


def _seed(store: RunStore, labels: LabelSet, ckpt: Path | None, feats: list[int]) -> LabelSet:
    """Results of the checkpoint into the store; the store's results as the labels."""
    stored = store.finished()
    seeded = [r for f, r in labels.items() if f not in stored]
    if seeded:
        store.put(seeded)
        log.info("imported %d results from the checkpoint %s", len(seeded), ckpt)
    if labels.info and store.get_meta("info") is None:
        store.set_meta(info=labels.info)
    store.add_features(feats)
    return store.labelset()


def load_checkpoint(path: Path, config: LabelConfig, ex: ExampleConfig,
                    identity: dict[str, Any]) -> LabelSet:
    """The legacy JSON checkpoint's labels (none if the file is absent); made with other
    inputs or settings: an error."""
    if not path.exists():
        return LabelSet()
    done = LabelSet.load(path)
    # Stored configs are read back through from_dict, so that a checkpoint written before a
    # config gained or regrouped fields (PerformanceConfig) still compares equal.
    stored = dict(done.info)
    if "label_config" in stored:
        stored["label_config"] = LabelConfig.from_dict(stored["label_config"]).result_settings()
    if "example_config" in stored:
        stored["example_config"] = ExampleConfig.from_stored(stored["example_config"]).to_dict()
    for key, want in (("identity", identity), ("label_config", config.result_settings()),
                      ("example_config", ex.to_dict())):
        if stored.get(key) != want:
            what = IDENTITY_NAMES.get(key, f"another {key.replace('_', ' ')}")
            raise ValueError(
                f"The checkpoint {path} was made with {what}. Pass the same inputs and "
                "settings to resume, or another checkpoint path to start afresh."
            )
    return done


Score = Callable[[list[LabelResult]], list[LabelResult]]


class RunSink:
    """The `ResultSink` of a run: scores finished results, then keeps them in the record
    (memory, store or checkpoint), renews this process's claims and moves the progress
    bar."""

    def __init__(self, record: RunRecord, bar: Any, score: Score | None = None,
                 release: Callable[[list[int]], None] | None = None) -> None:
        self.record, self.bar, self.score, self.release = record, bar, score, release

    def _heartbeat(self) -> None:
        if self.record.claimer is not None:
            self.record.claimer.heartbeat()

    def start(self, features: list[int]) -> None:
        if self.record.store is not None:
            self.record.store.start(features)
        self._heartbeat()

    def put(self, results: list[LabelResult]) -> None:
        if not results:
            return
        if self.score is not None:
            # Before the store: a stored result is final (a resume never rescores it).
            results = self.score(results)
        rec = self.record
        if rec.store is not None:
            rec.store.put(results)
        for r in results:
            rec.labels.add(r)
        if rec.ckpt is not None:
            rec.labels.save(rec.ckpt)
        rec.n_new += len(results)
        if self.release is not None:  # kept: what prepared them is needed no more
            self.release([int(r.feature) for r in results])
        self._heartbeat()
        self._show(results)

    def _show(self, results: list[LabelResult]) -> None:
        self.bar.update(len(results))
        last = results[-1]
        self.bar.set_postfix_str(f"{last.feature}: {last.label!r}" if last.status == "ok"
                                 else f"{last.feature}: {last.status}", refresh=False)
        for r in results:
            log.info("feature %s: %s %r p=%.3f", r.feature, r.status, r.label, r.probability)

    def fail(self, features: list[int], err: BaseException) -> None:
        if self.record.store is not None and features:
            self.record.store.fail(features, f"{type(err).__name__}: {err}")
