"""`tokenlabel demo`: the main job on the embedded toy world, offline; the same output on every
run, a second run on the same folder resumes, and its output-side figures mean something."""

from __future__ import annotations

import re

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.run import load_labelset
from saelens_tokenlabel.toy.planted import ANIMAL_FEATURE, DIGIT_FEATURE

RANDOM_FEATURES = (4, 5, 6, 7)


def _printed_labels(printed: str) -> list[str]:
    """The label lines the demo prints (feature, label, probability)."""
    return [line for line in printed.splitlines() if re.match(r"^\s+\d+\s+'", line)]


@pytest.mark.slow
def test_demo_labels_the_planted_sae_and_writes_the_report(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    labels = load_labelset(tmp_path / "a" / "run")
    assert list(labels) == list(range(8))
    assert labels[0].label == "animal"  # the planted animal feature
    # The digit feature: the toy corpus writes numbers as digits only, so both fit.
    assert labels[1].label in ("digit", "number")
    assert labels[2].status == "dead"
    # The verdicts tell them apart: the concept features' labels are explained; a random
    # feature's label is never trusted, whatever its p, and each verdict is printed with it.
    assert labels[ANIMAL_FEATURE].verdict.value == "explained"
    assert labels[DIGIT_FEATURE].verdict.value == "explained"
    for f in RANDOM_FEATURES:
        v = labels[f].verdict
        assert v.value != "explained" and v.low < 0.75, (f, v)
    assert labels[2].verdict.value == "dead"
    for f in labels:
        if labels[f].status == "ok":
            assert labels[f].verdict.short() in printed
    index = tmp_path / "a" / "run" / "report" / "index.html"
    assert index.is_file() and str(index) in printed
    assert (tmp_path / "a" / "run" / "run.sqlite").is_file()
    assert (tmp_path / "a" / "inputs" / "sae" / "cfg.json").is_file()
    # The output side means something: the concept features' decoder rows write their
    # concept (their logit lens promotes it first), and steering with them makes the model
    # say it more than steering with any random feature says that feature's label.
    for f, word in ((ANIMAL_FEATURE, " animal"), (DIGIT_FEATURE, " number")):
        assert labels[f].extra.output_side.promoted[0].token == word
    steering = {f: labels[f].metrics["steering_score"] for f in labels if f != 2}
    assert steering[ANIMAL_FEATURE] > max(steering[f] for f in RANDOM_FEATURES)
    # Attempts are numbered per feature, without gaps (a refinement of another feature of
    # the batch is not one of them).
    for f in labels:
        assert [a.attempt for a in labels[f].attempts] == list(range(len(labels[f].attempts)))

    # Run again on the same folder: the same inputs are written, the run resumes, exit 0.
    assert main(["demo", "--out", str(tmp_path / "a")]) == 0
    again = capsys.readouterr().out
    assert _printed_labels(again) == _printed_labels(printed)
    assert load_labelset(tmp_path / "a" / "run").to_dict() == labels.to_dict()
    # And in a new folder: everything is seeded, so the labels and every score are the same.
    assert main(["demo", "--out", str(tmp_path / "b")]) == 0
    assert _printed_labels(capsys.readouterr().out) == _printed_labels(printed)
    fresh = load_labelset(tmp_path / "b" / "run")
    assert [r.to_dict() for r in fresh.values()] == [r.to_dict() for r in labels.values()]
