from __future__ import annotations

import dataclasses

import pytest

from saelens_tokenlabel import LabelConfig


def test_default_starts_from_table_1_with_a_single_token_at_the_regularisers_optimum():
    d, a = LabelConfig(), LabelConfig.preset("animals")
    for f in ("batch_size", "epochs", "lambda_acc"):
        assert getattr(d, f) == getattr(a, f)
    # The loss weights are the mammal preset's: λ_ent > λ_kl makes the regulariser
    # (λ_ent − λ_kl)·H(p) − λ_kl·Σ p log q strictly concave in p, so that its optimum is a
    # single token; the animal preset's λ_ent = λ_kl leaves it linear (issue 21).
    m = LabelConfig.preset("mammals")
    assert (d.lambda_ent, d.lambda_kl) == (m.lambda_ent, m.lambda_kl)
    assert d.lambda_ent > d.lambda_kl and a.lambda_ent == a.lambda_kl
    assert d.lr == LabelConfig.preset("numbers").lr == 0.1
    # Restarts and refinements change the search, never to an objective without that optimum.
    for r in (*d.restarts, d.refine_overrides):
        assert r["lambda_ent"] > r["lambda_kl"]


@pytest.mark.parametrize("name, batch, epochs, lr, kl, ent", [
    ("animals", 10, 50, 0.03, 0.2, 0.2),
    ("mammals", 10, 100, 0.2, 0.1, 0.3),
    ("chinese", 25, 100, 0.5, 0.05, 0.25),
    ("numbers", 20, 10, 0.1, 0.2, 0.2),
    ("mammal_text", 20, 10, 0.1, 0.2, 0.2),
    ("palindromes", 15, 15, 0.1, 0.2, 0.2),
])
def test_presets_are_table_1(name, batch, epochs, lr, kl, ent):
    c = LabelConfig.preset(name)
    assert (c.batch_size, c.epochs, c.lr, c.lambda_kl, c.lambda_ent, c.lambda_acc) == (
        batch, epochs, lr, kl, ent, 1.0)


def test_preset_overrides_and_unknown():
    assert LabelConfig.preset("numbers", seed=3).seed == 3
    assert LabelConfig.preset("numbers", lr=0.5).lr == 0.5  # overrides win over Table 1
    with pytest.raises(KeyError, match="animals"):
        LabelConfig.preset("nope")


@pytest.mark.parametrize("kw, match", [
    ({"lr": 0}, "lr"), ({"batch_size": 1}, "batch_size"), ({"lambda_kl": -1}, "lambda_kl"),
    ({"prediction": "softmax"}, "prediction"), ({"threshold_fraction": 1.0}, "threshold"),
    ({"convergence_mass": 0}, "convergence_mass"), ({"steps": 0}, "steps"),
    ({"sampler": "stratified"}, "sampler"), ({"entropy_warmup": 2}, "entropy_warmup"),
    ({"restarts": ({"threshold": 0.1},)}, r"restarts may only override .*\['threshold'\]"),
    ({"restarts": ({"lr": -1},)}, "lr must be > 0"),
    ({"label_length": 3, "max_label_length": 2}, "max_label_length"),
])
def test_bad_config_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        LabelConfig(**kw)


def test_total_steps_and_roundtrip():
    c = LabelConfig(batch_size=10, epochs=2)
    assert c.total_steps(95) == 20
    assert LabelConfig(steps=7).total_steps(1000) == 7
    assert LabelConfig(epochs=50).total_steps(1000) == 500  # max_attempt_steps
    assert LabelConfig(steps=5000).total_steps(1000) == 5000  # explicit steps are exact
    assert LabelConfig.preset("animals").total_steps(1000) == 5000
    assert LabelConfig.from_dict(c.to_dict()) == c


def test_presets_are_the_paper_method_and_the_default_adds_restarts():
    p = LabelConfig.preset("mammals")
    assert p.sampler == "balanced" and p.restarts == () and p.temperature_final == 1.0
    assert p.max_attempt_steps is None
    d = LabelConfig()
    assert d.temperature_final < 1 and len(d.restarts) >= 1
    assert any(r.get("sampler") == "confusion" for r in d.restarts)
    attempts = d.attempt_configs()
    assert attempts[0] == ({}, dataclasses_replace(d, restarts=()))
    for (overrides, cfg), r in zip(attempts[1:], d.restarts, strict=True):
        assert overrides == r and cfg.restarts == ()
        assert all(getattr(cfg, k) == v for k, v in r.items())
    c = LabelConfig(restarts=({"lr": 0.5, "seed": 4},))
    assert LabelConfig.from_dict(c.to_dict()) == c
    assert c.to_dict()["restarts"] == [{"lr": 0.5, "seed": 4}]  # JSON-ready


def test_entropy_warmup_ramp():
    c = LabelConfig(lambda_ent=0.4, entropy_warmup=0.5)
    assert [round(c.lambda_ent_at(s, 8), 6) for s in range(6)] == [0.1, 0.2, 0.3, 0.4, 0.4, 0.4]
    assert LabelConfig(lambda_ent=0.4).lambda_ent_at(0, 8) == 0.4


def dataclasses_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def test_performance_settings_are_nested_and_old_flat_dicts_load():
    from saelens_tokenlabel.records.config import PerformanceConfig

    c = LabelConfig(lr=0.2, performance=PerformanceConfig(use_cache=False, max_rows_per_pass=4))
    d = c.to_dict()
    assert d["performance"] == {"use_cache": False, "max_rows_per_pass": 4,
                                "max_resident_examples": None, "eval_batch_size": 64,
                                "fast_suffix": True}
    assert LabelConfig.from_dict(d) == c
    assert LabelConfig(performance={"eval_batch_size": 8}).performance.eval_batch_size == 8
    # Results and run stores written before: the four knobs at the top level.
    flat = {k: v for k, v in d.items() if k != "performance"}
    flat.update(use_cache=False, max_rows_per_pass=4, max_resident_examples=None,
                eval_batch_size=64)
    assert LabelConfig.from_dict(flat) == c
    # What decides results leaves them out, so a resumed run may change them.
    settings = c.result_settings()
    assert "performance" not in settings and "use_cache" not in settings
    assert settings == LabelConfig(lr=0.2).result_settings()
    assert settings == {k: v for k, v in d.items() if k != "performance"}


@pytest.mark.parametrize("kw, match", [
    ({"eval_batch_size": 0}, "eval_batch_size"), ({"max_rows_per_pass": 0}, "max_rows_per_pass"),
    ({"max_resident_examples": 0}, "max_resident_examples"),
])
def test_bad_performance_config_is_a_clear_error(kw, match):
    from saelens_tokenlabel.records.config import PerformanceConfig

    with pytest.raises(ValueError, match=f"PerformanceConfig: {match}"):
        PerformanceConfig(**kw)
    with pytest.raises(ValueError, match=match):
        LabelConfig(performance=kw)


def test_a_moved_keyword_names_where_it_went():
    """Code written against the last release gets one line that says where the keyword
    moved, generated from the config's table of moved fields."""
    from saelens_tokenlabel.records.config import PerformanceConfig
    from saelens_tokenlabel.sae import ScoreConfig

    for name in ("use_cache", "eval_batch_size", "max_rows_per_pass"):
        with pytest.raises(TypeError) as err:
            LabelConfig(**{name: None})
        assert str(err.value) == (f"LabelConfig({name}=...) has moved: write "
                                  f"LabelConfig(performance=PerformanceConfig({name}=...)).")
    assert set(LabelConfig.MOVED_FIELDS) == {f.name for f in dataclasses.fields(
        PerformanceConfig)} | {"warm_start_top_k", "warm_start_top_mass"}
    with pytest.raises(TypeError, match=r"write LabelConfig\(warm_start_options="
                                        r"WarmStartConfig\(top_k=\.\.\.\)\)"):
        LabelConfig(warm_start_top_k=5)
    old = LabelConfig.from_dict({"warm_start_top_k": 7, "warm_start_top_mass": 0.3})
    assert (old.warm_start_options.top_k, old.warm_start_options.top_mass) == (7, 0.3)
    with pytest.raises(TypeError, match=r"ScoreConfig\(coherence=\.\.\.\) has moved: write "
                                        r"ScoreConfig\(scorers=\(\.\.\.\) without 'coherence'"):
        ScoreConfig(coherence=False)
    with pytest.raises(TypeError, match=r"options=\{'output_side': \{'k': \.\.\.\}\}"):
        ScoreConfig(output_k=3)
    # Files keep loading: a stored config with the old layout moves its fields itself.
    assert LabelConfig.from_dict({"use_cache": False}).performance.use_cache is False
