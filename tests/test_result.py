from __future__ import annotations

import json

import torch

from saelens_tokenlabel import FeatureData, LabelConfig, LabelResult, label_feature
from saelens_tokenlabel.scores import auroc, detection_scores


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
    assert r.n_examples == 5 and r.n_active == 2 and r.threshold == 0.5
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
