"""The amortised run's bookkeeping at scale: the refit schedule (O(log n) fits, each on at
most `max_train` labels), the rounds' counts (each finished feature looked at once), and, on
a planted world, rounds that start while earlier work is still out give the labels of the run
that waits for everything."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from saelens_tokenlabel.records.result import LabelResult, Trajectory
from saelens_tokenlabel.run.amortise.config import AmortizeConfig
from saelens_tokenlabel.run.amortise.map import training_subset
from saelens_tokenlabel.run.amortise.mode import Rounds


def _result(f: int, label: int = 5, method: str = "descended") -> LabelResult:
    return LabelResult(label=f"w{label}", label_tokens=[f"w{label}"], label_token_ids=[label],
                       probability=0.9, converged=True, steps=10,
                       metrics={"validation_balanced_accuracy": 1.0,
                                "train_balanced_accuracy": 1.0},
                       trajectory=Trajectory(), feature=f, method=method)


def _fits(config: AmortizeConfig, n_final: int, per_round: int) -> list[int]:
    """The trustworthy counts at which a run whose count grows by `per_round` a round
    fits its maps."""
    last, fits = None, []
    for n in range(0, n_final + 1, per_round):
        if config.refits(n, last):
            fits.append(n)
            last = n
    return fits


def test_small_runs_refit_every_refit_every_labels_as_before():
    """Below refit_every / refit_growth labels the schedule is the one of refit_every
    alone: a refit each time the count crosses a multiple of it."""
    c = AmortizeConfig()
    fits = _fits(c, 300, 3)
    assert fits[0] == 9  # the first map: min_train (8) labels, on the count's grid
    crossings = [fits[0]] + [n for n in range(fits[0] + 3, 301, 3)
                             if n // c.refit_every > (n - 3) // c.refit_every]
    assert fits == crossings


def test_refits_are_logarithmic_and_their_training_sets_sum_to_a_linear_cost():
    """A whole 131k-feature SAE (a descent in five features trustworthy): refitting every
    32 new labels would fit ~800 maps on up to 26k labels each, a cost quadratic in the SAE;
    the schedule fits O(log n) maps, each on at most max_train labels."""
    c = AmortizeConfig()
    for n_final in (10_000, 26_000):
        fits = _fits(c, n_final, 13)
        rows = sum(min(n, c.max_train) for n in fits)
        assert len(fits) < 10 + 12 * (n_final.bit_length()), len(fits)
        assert rows < 20 * n_final, (n_final, rows)
    few, many = _fits(c, 10_000, 13), _fits(c, 26_000, 13)
    cost = [sum(min(n, c.max_train) for n in f) for f in (few, many)]
    assert cost[1] / cost[0] < 1.2 * 26 / 10  # linear in the labels, not quadratic
    every = AmortizeConfig(refit_growth=0)
    assert len(_fits(every, 26_000, 13)) > 800  # what refit_growth saves


def test_training_subset_keeps_every_class_and_what_a_smaller_set_kept():
    results = [_result(f, label=5 if f % 50 else 7 + f) for f in range(2_000)]
    c = AmortizeConfig(max_train=300)
    picked = training_subset(results, c.max_train, c.seed)
    assert len(picked) == 300
    assert {r.label for r in picked} == {r.label for r in results}  # every class
    assert [int(r.feature) for r in picked] == sorted(int(r.feature) for r in picked)
    assert training_subset(results, c.max_train, c.seed) == picked  # deterministic
    more = training_subset(results + [_result(f) for f in range(2_000, 2_200)], 300, c.seed)
    kept = {int(r.feature) for r in picked} & {int(r.feature) for r in more}
    assert len(kept) > 0.8 * 300
    assert training_subset(results[:100], 300, 0) == results[:100]


class _Counting(Mapping[int, LabelResult]):
    """Labels that count how often a feature is looked up."""

    def __init__(self) -> None:
        self.data: dict[int, LabelResult] = {}
        self.lookups = 0

    def __contains__(self, f: object) -> bool:
        self.lookups += 1
        return f in self.data

    def __getitem__(self, f: int) -> LabelResult:
        self.lookups += 1
        return self.data[f]

    def __iter__(self) -> Iterator[int]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _lookups(n: int) -> int:
    """Lookups of a run of `n` features in rounds of 64, each round's map asked for while
    the round before is still out (as on Ray)."""
    groups = [list(range(i, min(n, i + 64))) for i in range(0, n, 64)]
    labels = _Counting()
    rounds = Rounds(groups, bar=0.9)
    for i in range(len(groups)):
        rounds.refresh(i, labels)
        for j in range(max(0, i - 3), i + 1):
            lo, hi = rounds.bounds(j)
            assert lo <= hi
        if i:
            for f in groups[i - 1]:
                labels.data[f] = _result(f)
    rounds.refresh(len(groups) - 1, labels)
    assert rounds.bounds(len(groups) - 1)[0] == sum(map(len, groups[:-1]))
    return labels.lookups


def test_the_rounds_look_at_each_finished_feature_once():
    """Counting a round's trustworthy labels must not go back over the whole run each
    round (that would be quadratic in the features)."""
    small, large = _lookups(2_048), _lookups(32_768)
    assert large / small < 1.2 * 16, (small, large)
    assert large < 4 * 32_768


@pytest.mark.slow
def test_rounds_started_before_earlier_work_is_back_give_the_same_labels(tmp_path):
    """A pool that returns its work late and last-first (a verification's descent may come
    back rounds later, as on Ray): every round's map is the map of the run that waits for
    everything, so the labels, methods and steps are the same."""
    from saelens_tokenlabel.run.executors import InlinePool, LocalExecutor

    from ..amortrun import run

    class Late(InlinePool):
        """Holds every task until `wait` (or the end), then does the newest first."""

        def __init__(self, *args):
            super().__init__(*args)
            self.held: list = []
            self.sent = self.waited_at = 0
            # Verifications sent while a task from before the driver's last wait (so from
            # an earlier round: it waits only for a round's map) was still out.
            self.ahead = 0

        def _hold(self, task):
            self.sent += 1
            self.held.append((self.sent, task))

        def descend(self, batch):
            self._hold(lambda: InlinePool.descend(self, batch))

        def verify(self, batch, then):
            self.ahead += any(n <= self.waited_at for n, _ in self.held)
            self._hold(lambda: InlinePool.verify(self, batch, then))

        def wait(self):
            if not self.held:
                return False
            self.waited_at = self.sent
            self.held.pop()[1]()
            return True

        def drain(self):
            while self.wait():
                pass

    class LateExecutor(LocalExecutor):
        pools: list = []

        def pool(self, evaluator, config, sink):
            import contextlib

            pool = Late(LocalExecutor(), evaluator, config, sink)
            self.pools.append(pool)
            return contextlib.nullcontext(pool)

    def outcome(labels):
        return {f: (labels[f].status, labels[f].label, labels[f].method,
                    sum(a.steps for a in labels[f].attempts) or labels[f].steps)
                for f in labels}

    # Refits every 4 labels: most rounds' maps are known before the round before is back.
    ref = run(tmp_path, tmp_path / "inline", amortize={"refit_every": 4})
    late = LateExecutor()
    got = run(tmp_path, tmp_path / "late", amortize={"refit_every": 4}, executor=late)
    assert late.pools[0].ahead > 0  # rounds went on while earlier work was out
    assert outcome(got) == outcome(ref)
