"""The executor seam without an SAE: hand-made `LabelBatch`es, a stand-in `label` function
(failure injection), and a recording sink. The Ray dispatch runs on a stand-in for Ray (the
real one: test_ray_backend.py)."""

from __future__ import annotations

import pytest

from saelens_tokenlabel.descent.batch import LabelBatch
from saelens_tokenlabel.formats.labelset import status_result
from saelens_tokenlabel.records.data import Examples, PreparedFeature
from saelens_tokenlabel.records.extra import FeatureExtra
from saelens_tokenlabel.run.executors import LocalExecutor
from saelens_tokenlabel.run.ray_backend import _Dispatch


class Sink:
    def __init__(self):
        self.events = []

    def start(self, features):
        self.events.append(("start", list(features)))

    def put(self, results):
        if results:
            self.events.append(("put", [(r.feature, r.status, r.extra.other.get("seen"))
                                        for r in results]))

    def fail(self, features, err):
        self.events.append(("fail", list(features), str(err)))


def _prepared(f: int) -> PreparedFeature:
    # Never labeled here: the stand-in reads names.
    return PreparedFeature(f, Examples([], 0.0, "activation > 0"))


def _batch(*features: int, dead: tuple[int, ...] = ()) -> LabelBatch:
    live = [f for f in features if f not in dead]
    return LabelBatch(features=list(features),
                      done=[status_result(f, "dead", "never fires") for f in dead],
                      prepared=[_prepared(f) for f in live],
                      extras={f: FeatureExtra(other={"seen": "driver"}) for f in live})


def fake_label(batch, evaluator, config):
    if 3 in batch.to_label:
        raise RuntimeError("simulated failure")
    return [status_result(f, "ok", "") for f in batch.to_label]


def test_local_executor_reports_each_batch_and_stops_at_a_failure():
    sink = Sink()
    batches = [_batch(0, 1, dead=(1,)), _batch(2), _batch(3), _batch(4)]
    with pytest.raises(RuntimeError, match="simulated"):
        LocalExecutor(label=fake_label).run(iter(batches), None, None, sink)
    assert sink.events == [
        ("start", [0, 1]), ("put", [(1, "dead", None)]), ("put", [(0, "ok", "driver")]),
        ("start", [2]), ("put", [(2, "ok", "driver")]),
        ("start", [3]), ("fail", [3], "simulated failure"),
    ]  # batch 4 was never asked for


class _Ref:
    def __init__(self, batch):
        self.batch = batch


class _Actor:
    class label:  # noqa: N801  (the shape of a Ray actor method)
        @staticmethod
        def remote(batch):
            assert batch.done == [] and batch.extras == {}  # driver parts stay
            return _Ref(batch)


class _Ray:
    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return fake_label(ref.batch, None, None)


def test_ray_dispatch_stores_what_comes_back_and_raises_the_first_failure():
    sink = Sink()
    batches = [_batch(0), _batch(3), _batch(5), _batch(6)]
    with pytest.raises(RuntimeError, match="simulated"):
        _Dispatch(_Ray(), [_Actor()], 1, sink).run(iter(batches))
    assert sink.events == [
        ("start", [0]),
        ("start", [3]), ("put", [(0, "ok", "driver")]),
        ("start", [5]), ("fail", [3], "simulated failure"),
    ]  # 5 was started but never sent: it stays unfinished for a rerun; 6 never asked for
