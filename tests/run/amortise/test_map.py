"""The amortised labeler's map: fitting, proposals, cross-validation, files, warm starts."""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel import AmortizeConfig, LabelResult
from saelens_tokenlabel.records.result import Trajectory
from saelens_tokenlabel.records.serial import ConfigError
from saelens_tokenlabel.run.amortise.map import (
    Amortizer,
    init_logits,
    label_targets,
    ridge_weights,
)


def _result(feature: int, ids: list[int], text: str, p: float = 0.95,
            top: list[tuple[int, float]] | None = None) -> LabelResult:
    traj = Trajectory()
    if top:
        traj = Trajectory(step=[0], loss=[0.0], top_ids=[[[t for t, _ in top]]],
                          top_probs=[[[q for _, q in top]]])
    return LabelResult(label=text, label_tokens=[text], label_token_ids=ids, probability=p,
                       converged=True, steps=100, metrics={}, trajectory=traj,
                       feature=feature)


def _clusters(n_per: int, seed: int = 0, d: int = 24, spread: float = 0.5):
    """Three concepts, unit decoder rows clustered around one direction each."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(3, d, generator=g), dim=-1)
    x, results = [], []
    names = [("animal", 11), ("color", 22), ("food", 33)]
    for i in range(3 * n_per):
        c = i % 3
        x.append(torch.nn.functional.normalize(
            centres[c] + spread * torch.randn(d, generator=g) / d ** 0.5, dim=0))
        results.append(_result(i, [names[c][1]], names[c][0]))
    return torch.stack(x).double(), results, centres


@pytest.mark.parametrize("method", ["ridge", "knn"])
def test_the_map_proposes_the_label_of_the_cluster_a_decoder_row_is_in(method):
    x, results, _ = _clusters(10)
    amortizer = Amortizer.fit(x, results, AmortizeConfig(method=method))
    assert amortizer.method == method and amortizer.class_text == ["animal", "color", "food"]
    # Same centres (seed 0), and draws past the first 30 that the map was not fitted on.
    x_new, truth, _ = _clusters(20, seed=0)
    props = amortizer.propose(x_new[30:], [r.feature for r in truth[30:]])
    hits = [p.token_ids == tuple(r.label_token_ids) for p, r in zip(props, truth[30:],
                                                                      strict=True)]
    assert sum(hits) / len(hits) >= 0.95
    for p in props:
        shares = [s for _, s in p.ranked]
        assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 1) < 1e-9
    assert set(amortizer.cv_accuracy) == {"ridge", "knn"}
    assert amortizer.cv_accuracy[method] >= 0.9


def test_auto_picks_the_map_that_generalises():
    # XOR: each label owns two opposite clusters, which no linear map separates and
    # neighbours do. Cross-validation must see it and pick knn.
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    x, results = [], []
    for i in range(40):
        c = i % 4
        x.append(centres[c] + 0.1 * torch.randn(2, generator=g))
        results.append(_result(i, [11] if c < 2 else [22], "same" if c < 2 else "opposite"))
    a = Amortizer.fit(torch.stack(x).double(), results, AmortizeConfig(method="auto", knn=3))
    assert a.cv_accuracy["knn"] >= 0.95 and a.cv_accuracy["ridge"] <= 0.7
    assert a.method == "knn"


def test_the_dual_and_the_primal_ridge_solutions_agree():
    g = torch.Generator().manual_seed(3)
    lam = 0.7
    for n, d in ((12, 30), (40, 9)):  # fewer labels than inputs (dual), more (primal)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.rand(n, 4, generator=g, dtype=torch.float64)
        want = torch.linalg.solve(x.T @ x + lam * torch.eye(d, dtype=torch.float64),
                                  x.T @ (y - y.mean(0)))
        torch.testing.assert_close(ridge_weights(x, y, lam), want, rtol=0, atol=1e-10)


def test_targets_are_the_final_distribution_over_known_labels_and_one_hot_for_longer_ones():
    results = [_result(0, [5], "cat", p=0.7, top=[(5, 0.7), (9, 0.2), (77, 0.1)]),
               _result(1, [9], "dog"),
               _result(2, [5, 6], "cat food")]
    classes, text, y = label_targets(results)
    assert classes == [(5,), (9,), (5, 6)] and text == ["cat", "dog", "cat food"]
    # Token 77 is no label of the map: its mass is dropped, the rest renormalised.
    torch.testing.assert_close(y[0], torch.tensor([0.7, 0.2, 0.0], dtype=torch.float64) / 0.9)
    assert y[2].tolist() == [0.0, 0.0, 1.0]


def test_a_saved_map_loads_to_the_same_proposals(tmp_path):
    x, results, _ = _clusters(6)
    for method in ("ridge", "knn"):
        a = Amortizer.fit(x, results, AmortizeConfig(method=method, knn=3))
        a.save(tmp_path / method)
        b = Amortizer.load(tmp_path / method)
        # Equal tensors; BLAS may round an aligned and a memory-mapped copy apart (1e-16).
        torch.testing.assert_close(a.scores(x), b.scores(x), rtol=0, atol=1e-12)
        assert [p.token_ids for p in a.propose(x, range(len(x)))] == \
            [p.token_ids for p in b.propose(x, range(len(x)))]
        assert (b.method, b.classes, b.features, b.config) == (a.method, a.classes,
                                                               a.features, a.config)
    with pytest.raises(FileNotFoundError, match="holds no amortizer.json"):
        Amortizer.load(tmp_path / "nothing")


def test_warm_start_logits_follow_the_weights_and_none_when_nothing_promises():
    v = init_logits([((5,), 0.6), ((9,), 0.3), ((7, 8), 0.1)], d_vocab=20, start=4.0)
    assert v.shape == (20,) and v[5] == 4.0 and v[9] == pytest.approx(2.0)
    assert v[7] == 0 and v[8] == 0  # another length: left out
    assert init_logits([((5,), 0.0), ((9,), 0.0)], 20, 4.0) is None
    two = init_logits([((7, 8), 0.5), ((5,), 0.9)], 20, 4.0)
    assert two.shape == (20,)  # the top weight decides the length
    slots = init_logits([((7, 8), 0.5)], 20, 4.0)
    assert slots.shape == (2, 20) and slots[0, 7] == 4.0 and slots[1, 8] == 4.0


def test_amortize_config_checks_and_seed_sizes():
    assert AmortizeConfig().n_seed(240) == 32  # 5 % is 12: at least min_seed
    assert AmortizeConfig().n_seed(20) == 20
    assert AmortizeConfig().n_seed(100_000) == 500  # 5 % is 5000: at most max_seed
    assert AmortizeConfig(seed_features=7).n_seed(240) == 7
    assert AmortizeConfig(seed_fraction=0.5, min_seed=0).n_seed(10) == 5
    for bad, match in (({"method": "mlp"}, "method"), ({"inputs": ("logits",)}, "inputs"),
                       ({"seed_order": "best"}, "seed_order"), ({"candidates": 0}, "candidates"),
                       ({"accept_score": 1.5}, "accept_score")):
        with pytest.raises(ConfigError, match=match):
            AmortizeConfig(**bad)
    assert AmortizeConfig.from_dict(AmortizeConfig(knn=3).to_dict()) == AmortizeConfig(knn=3)
    assert AmortizeConfig().warm_overrides(1) == {"restarts": (), "max_label_length": 1,
                                                  "max_attempt_steps": 250}
    assert AmortizeConfig(warm_restarts=True, warm_max_steps=None).warm_overrides(1) == {}


def test_method_is_a_later_field_of_results():
    r = _result(3, [5], "cat")
    assert r.method == "descended" and "method" not in r.to_dict()
    amortised = LabelResult.from_dict({**r.to_dict(), "method": "amortised"})
    assert amortised.method == "amortised" and amortised.to_dict()["method"] == "amortised"
