"""The comparison's records, tie rule, summary and bootstrap interval (no model needed)."""

from __future__ import annotations

import json
import random

import pytest

from saelens_tokenlabel.formats.comparison import (
    COMPARE_JSON,
    COMPARE_TSV,
    OURS,
    THEIRS,
    TIE,
    TSV_COLUMNS,
    UNDEFINED,
    CompareConfig,
    Comparison,
    FeatureComparison,
    ScoredLabel,
    bootstrap_interval,
    decide,
    summarize,
)
from saelens_tokenlabel.formats.explanations import SourceInfo
from saelens_tokenlabel.records.serial import ConfigError


def row(feature: int, ours: float | None, theirs: float | None, tol: float = 1e-9,
        text: str = "animals") -> FeatureComparison:
    winner, diff = decide(ours, theirs, tol)
    return FeatureComparison(
        feature=feature, ours=ScoredLabel("animal", (5,), 1, ours, {"heldout_f1": ours}),
        theirs=ScoredLabel(text, (5, 6), 2, theirs), winner=winner, difference=diff,
        n_heldout=10, n_heldout_active=4, stored_score=ours, where=f"x.tsv:{feature}")


@pytest.mark.parametrize("ours, theirs, tol, winner", [
    (0.9, 0.8, 1e-9, OURS),
    (0.8, 0.9, 1e-9, THEIRS),
    (0.9, 0.9, 1e-9, TIE),
    (0.1 + 0.2, 0.3, 1e-9, TIE),            # equal up to float rounding
    (0.75, 0.625, 0.125, TIE),              # within a looser tolerance (inclusive)
    (0.75, 0.62, 0.125, OURS),
    (None, 0.5, 1e-9, UNDEFINED),           # a held-out split with one class only
    (0.5, float("nan"), 1e-9, UNDEFINED),
])
def test_tie_rule(ours, theirs, tol, winner):
    got, diff = decide(ours, theirs, tol)
    assert got == winner
    assert (diff is None) == (winner == UNDEFINED)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    rng = random.Random(0)
    values = [rng.gauss(0.1, 0.2) for _ in range(50)]
    a = bootstrap_interval(values, 2000, seed=3)
    assert a == bootstrap_interval(values, 2000, seed=3)
    assert a != bootstrap_interval(values, 2000, seed=4)
    mean = sum(values) / len(values)
    lo, hi = a
    assert lo < mean < hi
    # The standard error of the mean is 0.2 / sqrt(50) = 0.028: a 95% interval is ~0.11 wide.
    assert 0.07 < hi - lo < 0.15
    assert bootstrap_interval([], 100) is None
    assert bootstrap_interval([0.25], 100) == (0.25, 0.25)
    # Resamples drawn in chunks: many values, few resamples per draw; still seeded.
    many = [rng.random() for _ in range(300_000)]
    assert bootstrap_interval(many, 20, seed=1) == bootstrap_interval(many, 20, seed=1)


def test_summary_counts_means_and_interval():
    rows = [row(0, 0.9, 0.5), row(1, 0.5, 0.9), row(2, 0.7, 0.7), row(3, 0.8, 0.6),
            row(4, None, 0.6)]
    config = CompareConfig(bootstrap_samples=500, seed=1)
    s = summarize(rows, config)
    assert (s.n_features, s.wins, s.ties, s.losses, s.undefined) == (5, 2, 1, 1, 1)
    assert s.mean_difference == pytest.approx((0.4 - 0.4 + 0.0 + 0.2) / 4)
    assert s.mean_ours == pytest.approx((0.9 + 0.5 + 0.7 + 0.8) / 4)
    assert s.mean_theirs == pytest.approx((0.5 + 0.9 + 0.7 + 0.6) / 4)
    assert s.interval == bootstrap_interval([0.4, -0.4, 0.0, 0.2], 500, seed=1)
    assert s.interval[0] <= s.mean_difference <= s.interval[1]
    assert s.line().startswith("5 features, held-out balanced_accuracy: ours wins 2, ties 1, "
                               "loses 1 (1 undefined); mean difference (ours - theirs) +0.050, "
                               "95% bootstrap interval [")
    empty = summarize([], config)
    assert (empty.mean_difference, empty.interval) == (None, None)
    assert empty.line() == "0 features, held-out balanced_accuracy: ours wins 0, ties 0, loses 0"


def test_config_is_checked():
    with pytest.raises(ConfigError, match="metric must be one of"):
        CompareConfig(metric="loss")
    with pytest.raises(ConfigError, match="tie_tolerance must be >= 0"):
        CompareConfig(tie_tolerance=-1)
    with pytest.raises(ConfigError, match="level must be in"):
        CompareConfig(level=1.0)


def test_comparison_round_trips_and_writes_its_files(tmp_path):
    rows = (row(0, 0.9, 0.5, text="a\tlong\nsentence"), row(3, None, 0.6))
    comparison = Comparison(
        summary=summarize(rows, CompareConfig(bootstrap_samples=50)), features=rows,
        source=SourceInfo("tsv", "x.tsv", 2, duplicates=1), evaluator="toy",
        run_evaluator="toy", not_compared={2: "no explanation in the source"},
        unused_explanations=7, notes=("a note",))
    tsv, js = comparison.save(tmp_path)
    assert (tsv.name, js.name) == (COMPARE_TSV, COMPARE_JSON)
    again = Comparison.load(tmp_path)
    assert again == comparison
    assert again[0].theirs.n_tokens == 2 and again.not_compared == {2: "no explanation in the "
                                                                       "source"}
    lines = tsv.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == list(TSV_COLUMNS)
    assert lines[1].split("\t")[:9] == ["0", "ours", "0.4", "animal", "1", "0.9",
                                        "a long sentence", "2", "0.5"]
    assert lines[2].split("\t")[1:3] == ["undefined", ""]
    assert json.loads(js.read_text())["format"] == "saelens_tokenlabel.Comparison"
    table = comparison.table(head=1)
    assert "'a long sentence' (2)" in table and "1 more in compare.tsv" in table
    with pytest.raises(KeyError, match="feature 9 was not compared"):
        comparison[9]
    js.write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(ValueError, match="Not a comparison file"):
        Comparison.load(js)
