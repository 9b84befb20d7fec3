"""Labeling on Ray: a local Ray instance on CPU with two actors gives the single-process
run's results, into the same kind of store."""

from __future__ import annotations

import functools

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.run import RunStore
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.run.ray_backend import RayConfig
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig
from saelens_tokenlabel.toy import load_toy_evaluator

from ..sae.planted import ANIMAL_FEATURE, DEAD_FEATURE, DIGIT_FEATURE, planted_sae

FEATURES = [ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE, 4, 5]


def test_ray_config_checks_itself():
    with pytest.raises(ValueError, match="num_workers"):
        RayConfig(num_workers=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        RayConfig(max_in_flight=0)


@pytest.mark.ray
def test_two_cpu_actors_give_the_single_process_results(subject, toy_corpus, tmp_path,
                                                         caplog):
    ray = pytest.importorskip("ray")
    import math

    evaluator = load_toy_evaluator(device="cpu")
    kw = dict(config=LabelConfig(lr=1.0, steps=8, batch_size=8, threshold=0.0),
              cache=CacheConfig(cache_dir=tmp_path / "cache"),
              examples=ExampleConfig(n_top=6, n_quantile=4, n_random=6, n_near_miss=4),
              features_per_batch=1)
    sae = planted_sae()
    local = label_sae_features(sae, subject, evaluator, toy_corpus[:60], FEATURES,
                               run_dir=tmp_path / "local", **kw)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        rc = RayConfig(num_workers=2, evaluator_loader=functools.partial(
            load_toy_evaluator, device="cpu"))
        with caplog.at_level("DEBUG", logger="saelens_tokenlabel.run.ray_backend"):
            got = label_sae_features(sae, subject, evaluator, toy_corpus[:60], FEATURES,
                                     run_dir=tmp_path / "ray", ray=rc, **kw)
        assert "-> actor 0" in caplog.text and "-> actor 1" in caplog.text  # both worked
        # An actor that cannot build its evaluator: the run stops with that error, nothing
        # is lost or marked done, and the store says what to retry.
        broken = RayConfig(num_workers=1, evaluator_loader=functools.partial(
            load_toy_evaluator, device="no-such-device"))
        with pytest.raises(Exception, match="no-such-device"):
            label_sae_features(sae, subject, evaluator, toy_corpus[:60], FEATURES,
                               run_dir=tmp_path / "broken", ray=broken, **kw)
        with RunStore(tmp_path / "broken", create=False) as store:
            assert store.finished() == set()
            assert {r["status"] for r in store.rows()} == {"pending"}
    finally:
        ray.shutdown()
    assert list(got) == list(local) == FEATURES
    assert got.by_status() == local.by_status() and got[DEAD_FEATURE].status == "dead"
    for f in FEATURES:
        a, b = got[f], local[f]
        assert (a.label, a.label_token_ids, a.steps, a.converged) == \
            (b.label, b.label_token_ids, b.steps, b.converged), f
        assert a.metrics.keys() == b.metrics.keys()
        for k, v in a.metrics.items():
            if v is None or b.metrics[k] is None:  # undefined scores (a rank with no match)
                assert v is b.metrics[k], (f, k)
            else:
                # Another process sums in another order (its own BLAS threads): the same
                # labels and steps, the losses equal to float32 accumulation error.
                assert math.isclose(v, b.metrics[k], rel_tol=1e-4, abs_tol=1e-6), (f, k)
        assert a.extra == b.extra
    with RunStore(tmp_path / "ray", create=False) as store:
        assert store.finished() == set(FEATURES)
        assert store.get_meta("info")["evaluator"] == evaluator.name
