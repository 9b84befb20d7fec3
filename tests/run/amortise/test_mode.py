"""The amortised run mode on a planted world: seeds by descent, proposals verified on each
feature's examples, liars rejected and found by descent, resumable like any run."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel import AmortizeConfig, LabelConfig
from saelens_tokenlabel.report.html import _summary
from saelens_tokenlabel.run import RunMismatchError, RunStore
from saelens_tokenlabel.run.amortise.mode import seed_set
from saelens_tokenlabel.run.amortise.proposals import accepts
from saelens_tokenlabel.run.export import table_rows
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ScoreConfig
from saelens_tokenlabel.toy.world import WorldConfig, build_world

pytestmark = pytest.mark.slow

# One proposal per feature (no second candidate to rescue a liar), a small seed set.
AMORTIZE = AmortizeConfig(seed_features=12, candidates=1, min_train=6, chunk=16)
BAR = LabelConfig().success_score
# The seed sets of the two goes (half the features, then all): a seed set depends on the
# features asked for.
SEEDS = set(seed_set(list(range(24)), AMORTIZE)) | set(seed_set(list(range(48)), AMORTIZE))


def _label(world, evaluator, folder, features, amortize=AMORTIZE):
    return label_sae_features(
        world.sae, world.subject, evaluator, list(world.corpus), features, LabelConfig(),
        cache=CacheConfig(cache_dir=folder.parent / "cache"), run_dir=folder,
        amortize=amortize, progress=False,
        scores=ScoreConfig(scorers=()))


def _attempts(folder) -> dict[int, int]:
    with RunStore(folder, create=False) as store:
        return {r["feature"]: r["starts"] for r in store.rows()}


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_evaluator):
    """A 48-feature world with 4 liars, labeled in two goes: half the features, then all
    (a resumed run), into one folder."""
    tmp = tmp_path_factory.mktemp("amortized")
    world = build_world(tmp / "world", WorldConfig(n_features=48, liars=4, seed=4))
    folder = tmp / "run"
    half = _label(world, toy_evaluator, folder, list(range(24)))
    before = _attempts(folder)
    labels = _label(world, toy_evaluator, folder, None)
    return world, folder, half, before, labels


def test_liars_proposals_are_rejected_and_the_descent_finds_their_concept(run):
    world, _, _, _, labels = run
    liars = [f for f in world.kinds()["liar"] if f not in SEEDS]
    assert len(liars) >= 2  # the fixed world puts most liars outside the seed sets
    for f in liars:
        spec, r = world.features[f], labels[f]
        # The decoder lies: the map's proposal (kept as the rejected attempt -1) is not the
        # feature's concept, and the examples say so...
        proposal = r.attempts[0]
        assert proposal.attempt == -1 and proposal.steps == 0 and proposal.rejected
        assert proposal.label != spec.concept
        assert not accepts(proposal.metrics, BAR)
        # ...so the feature is descended, warm-started, and the descent finds the concept.
        assert r.method == "warm_started" and r.steps > 0
        assert r.label == spec.concept
        assert [a.attempt for a in r.attempts[1:]] == list(range(len(r.attempts) - 1))


def test_accepted_proposals_clear_the_bar_and_cost_no_steps(run):
    world, _, _, _, labels = run
    amortised = [labels[f] for f in labels if labels[f].method == "amortised"]
    # 14 since the objective of issue 21 (17 before, 4 of them wrong, now 2): the seed set's
    # mammal features are labeled "mammal" by descent, no longer "animal", so the map proposes
    # "mammal" for some animal features; their examples reject it and a descent finds "animal".
    assert len(amortised) >= 14
    truth = world.truth()
    for r in amortised:
        assert accepts(r.metrics, BAR) and r.steps == 0 and r.status == "ok"
        assert r.n_heldout > 0 and "heldout_balanced_accuracy" in r.metrics
        assert r.metrics["amortised_share"] == r.probability
    wrong = [(r.label, truth[int(r.feature)]) for r in amortised
             if r.label != truth[int(r.feature)]]
    # One candidate per feature here: a parent label passes where the examples hold nothing
    # that tells it from the child (the benchmark's default scores three candidates).
    assert all(pair in {("animal", "mammal"), ("number", "digit")} for pair in wrong), wrong
    assert len(wrong) <= 0.25 * len(amortised)
    assert {int(f) for f in labels
            if labels[f].status == "ok" and labels[f].method == "descended"} <= SEEDS


def test_an_amortised_run_resumes_like_any_run(run, toy_evaluator):
    world, folder, half, before, labels = run
    # The second go kept the first go's results and started none of them again.
    for f in half:
        assert labels[f].to_dict() == half[f].to_dict()
    after = _attempts(folder)
    assert all(after[f] == before[f] for f in before)
    # A third go has nothing to do; another amortised setup is another run.
    again = _label(world, toy_evaluator, folder, None)
    assert _attempts(folder) == after
    assert {f: again[f].label for f in again} == {f: labels[f].label for f in labels}
    with pytest.raises(RunMismatchError, match="amortize"):
        _label(world, toy_evaluator, folder, None, AmortizeConfig(seed_features=5))


def test_status_export_and_report_say_how_each_label_was_found(run):
    _, folder, _, _, labels = run
    methods = {}
    for f in labels:
        if labels[f].status == "ok":
            methods[labels[f].method] = methods.get(labels[f].method, 0) + 1
    with RunStore(folder, create=False) as store:
        assert store.summary()["methods"] == methods
        columns, rows = table_rows(store)
    assert "method" in columns
    assert {r["method"] for r in rows if r["status"] == "ok"} == set(methods)
    assert "labeled by amortised: " in _summary(labels)


class _Dies:
    """A local executor that stops the run (as a kill would) at its `n`-th batch."""

    def __init__(self, n: int) -> None:
        from saelens_tokenlabel.run.executors import LocalExecutor

        self.inner, self.n, self.seen = LocalExecutor(), n, 0

    def run(self, batches, evaluator, config, sink):
        def counted():
            for b in batches:
                self.seen += 1
                if self.seen == self.n:
                    raise KeyboardInterrupt("killed")
                yield b

        self.inner.run(counted(), evaluator, config, sink)


@pytest.fixture(scope="module")
def toy_evaluator64():
    """The toy evaluator in float64. A resumed run forms its batches from the features left,
    and in float32 a feature's forward pass rounds differently (about 1e-7) beside other
    features' rows: enough, over a few hundred steps, to flip the argmax of a noise feature's
    attempt that ends in a mixture (feature 41 here: "food" at p = 0.44 or "number" at 0.51).
    In float64 batched = solo holds to rounding, and so does resumed = uninterrupted."""
    from saelens_tokenlabel import Evaluator
    from saelens_tokenlabel.evaluator.loading import load_local_model
    from saelens_tokenlabel.toy import TOY_EVALUATOR_DIR

    return Evaluator(load_local_model(TOY_EVALUATOR_DIR, device="cpu", dtype=torch.float64))


def test_an_interrupted_amortised_run_resumes_to_the_uninterrupted_labels(
        run, toy_evaluator64, tmp_path):
    world, toy_evaluator = run[0], toy_evaluator64
    whole = _label(world, toy_evaluator, tmp_path / "whole", None)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        label_sae_features(
            world.sae, world.subject, toy_evaluator, list(world.corpus), None, LabelConfig(),
            cache=CacheConfig(cache_dir=tmp_path / "cache"), run_dir=killed,
            amortize=AMORTIZE, progress=False, executor=_Dies(5),
            scores=ScoreConfig(scorers=()))
    with RunStore(killed, create=False) as store:
        assert 0 < len(store.finished()) < 48
    resumed = _label(world, toy_evaluator, killed, None)
    assert {f: (resumed[f].label, resumed[f].method) for f in resumed} == \
        {f: (whole[f].label, whole[f].method) for f in whole}
