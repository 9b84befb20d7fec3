from __future__ import annotations

import pytest

from saelens_tokenlabel.report.series import slot_series, visible, winner_probs, winning_id

from .trajectories import result, trajectory

NAMES = ["animal", "Anim", "rabbit", "dog", "cat", "pet", "fish", "bird", "cow", "horse",
         "mouse", "owl"]


def test_winner_first_then_runners_up_by_peak_probability():
    r = result(0, [NAMES])
    series = slot_series(r)
    assert [s.text for s in series] == NAMES[:10]
    assert [s.winner for s in series] == [True] + [False] * 9
    ids = {v: k for k, v in r.trajectory.tokens.items()}
    assert series[0].probs == r.trajectory.token_probability(ids["animal"])
    assert series[0].probs[-1] > 0.95 and series[1].probs[0] > 0


def test_winner_is_the_results_label_token_even_when_not_on_top_of_the_last_record():
    r = result(0, [NAMES])
    ids = {v: k for k, v in r.trajectory.tokens.items()}
    r.label_token_ids = [ids["rabbit"]]  # the result's own word wins over the trajectory's
    assert winning_id(r.trajectory, 0, r) == ids["rabbit"]
    assert winning_id(r.trajectory, 0) == ids["animal"]  # a bare Trajectory: last argmax
    assert slot_series(r)[0].text == "rabbit"


def test_slots_and_empty_trajectories():
    r = result(0, [NAMES[:4], ["s", "t"]])
    assert [s.text for s in slot_series(r, slot=1)] == ["s", "t"]
    assert len(winner_probs(r)) == 2
    with pytest.raises(ValueError, match="slot 2 is out of range"):
        slot_series(r, slot=2)
    r.trajectory = trajectory([NAMES], n_steps=0)
    assert winner_probs(r) == []
    with pytest.raises(ValueError, match="no trajectory"):
        slot_series(r)


def test_visible_spells_out_what_a_browser_or_utf8_would_lose():
    assert visible(" cat") == " cat"
    assert visible("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert visible("\x00\x1b\x85") == "\\x00\\x1b\\x85"
    assert visible("\ud800中") == "\\ud800中"
    visible("\ud800").encode("utf-8")  # no lone surrogate left
