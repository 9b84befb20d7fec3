from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from saelens_tokenlabel import FeatureData, LabelConfig, LabelResult, Trajectory, label_feature
from saelens_tokenlabel.descent.scores import auroc, detection_scores
from saelens_tokenlabel.records.extra import (
    ActivationStats,
    ExampleRecord,
    FeatureExtra,
    OutputSide,
    RecordError,
    TokenLogit,
    WordRecord,
    from_plain,
    token_logits,
)


def test_result_json_roundtrip(tiny_evaluator):
    data = FeatureData.from_sentences(
        [[("The", 0.0), (" cat", 1.0), (" sat", 0.0)], [("A", 0.0), (" dog", 1.0)]], name="f")
    r = label_feature(data, tiny_evaluator, LabelConfig(steps=3, batch_size=2))
    text = r.to_json()
    back = LabelResult.from_json(text)
    assert back.to_dict() == r.to_dict()
    assert json.loads(text)["trajectory"]["tokens"]
    assert back.trajectory.tokens == r.trajectory.tokens  # int keys survive JSON
    assert len(back.trajectory) == 3
    for key in ("loss", "loss_accuracy", "loss_entropy", "loss_kl", "train_accuracy",
                "train_balanced_accuracy", "train_f1", "train_auroc"):
        assert key in r.metrics
    assert r.n_examples == 5 and r.n_active == 2 and r.threshold == 0.0
    assert r.config["steps"] == 3
    top = r.trajectory.top_ids[-1][0][0]
    assert r.trajectory.token_probability(top)[-1] == r.trajectory.top_probs[-1][0][0]


def test_detection_scores_on_known_cases():
    t = torch.tensor([True, True, False, False])
    perfect = detection_scores(torch.tensor([2.0, 1.0, -1.0, -3.0]), t)
    assert perfect["balanced_accuracy"] == 1.0 and perfect["f1"] == 1.0
    assert perfect["auroc"] == 1.0
    inverted = detection_scores(torch.tensor([-2.0, -1.0, 1.0, 3.0]), t)
    assert inverted["balanced_accuracy"] == 0.0 and inverted["auroc"] == 0.0
    constant = detection_scores(torch.tensor([1.0, 1.0, 1.0, 1.0]), t)
    assert constant["balanced_accuracy"] == 0.5 and constant["auroc"] == 0.5
    assert constant["recall"] == 1.0 and constant["precision"] == 0.5
    assert auroc(torch.tensor([0.3, 0.1]), torch.tensor([True, True])) != auroc(
        torch.tensor([0.3, 0.1]), torch.tensor([True, True]))  # NaN: one class only


def _bare(**kw) -> LabelResult:
    return LabelResult(label="cat", label_tokens=["cat"], label_token_ids=[7], probability=0.9,
                       converged=True, steps=3, metrics={"train_f1": 1.0},
                       trajectory=Trajectory(step=[0], tokens={7: "cat"}), **kw)


def test_records_round_trip_by_field_type():
    extra = FeatureExtra(
        activation=ActivationStats(max=2.0, n_active_tokens=3, frequency=0.25),
        words=(WordRecord(subject_ids=(5, 6), subject_tokens=("Ġc", "at"), text=" cat",
                          word="cat", merged=True, complete=True),),
        examples=(ExampleRecord(text="a cat", word="cat", activation=2.0, kind="top"),),
        output_side=OutputSide(promoted=token_logits([("cat", 1.5)]),
                               suppressed=(TokenLogit("dog", -1.0),)))
    d = extra.to_dict()
    assert d["words"][0]["subject_ids"] == [5, 6]  # tuples written as JSON lists
    assert d["output_side"] == {"promoted": [["cat", 1.5]], "suppressed": [["dog", -1.0]]}
    assert FeatureExtra.from_dict(json.loads(json.dumps(d))) == extra
    r = _bare(extra=extra)
    back = LabelResult.from_json(r.to_json())
    assert back == r and back.trajectory.tokens == {7: "cat"}
    # Unknown top-level keys (a newer version's) are ignored; a missing trajectory is empty.
    newer = {**r.to_dict(), "from_the_future": 1}
    del newer["trajectory"]
    assert len(LabelResult.from_dict(newer).trajectory) == 0


def test_a_misshapen_record_is_named():
    with pytest.raises(RecordError, match=r"OutputSide.promoted\[0\]: expected \[token, logit\]"):
        OutputSide.from_dict({"promoted": [["cat"]]})
    with pytest.raises(RecordError, match=r"examples\[0\]: not a ExampleRecord .*missing"):
        from_plain(tuple[ExampleRecord, ...], [{"text": "x"}], "examples")
    # In a result's extra, such an entry is kept as read (and written back), not lost.
    assert FeatureExtra.from_dict({"examples": [{"text": "x"}]}).other == {
        "examples": [{"text": "x"}]}


def test_extra_is_a_record_and_results_are_replaced_not_patched():
    with pytest.raises(TypeError, match="FeatureExtra.from_dict"):
        _bare(extra={"message": "x"})
    r = _bare()
    assert not r.extra and r.extra == FeatureExtra()
    more = FeatureExtra(message="m", other={"k": 1})
    r2 = dataclasses.replace(r, extra=r.extra.merged(more))
    assert r.extra == FeatureExtra() and r2.extra.to_dict() == {"message": "m", "k": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r2.extra.message = "patched"  # type: ignore[misc]
