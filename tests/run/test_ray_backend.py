"""Labeling on Ray: a local Ray instance on CPU with two actors gives the single-process
run's results, into the same kind of store."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from saelens_tokenlabel import LabelConfig
from saelens_tokenlabel.run import RunStore
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.run.ray_backend import RayConfig
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig
from saelens_tokenlabel.toy import load_toy_evaluator

from ..sae.planted import ANIMAL_FEATURE, DEAD_FEATURE, DIGIT_FEATURE, planted_sae
from .test_resume import _finished

FEATURES = [ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE, 4, 5]


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread, as in an actor with one CPU; restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def test_ray_config_checks_itself():
    with pytest.raises(ValueError, match="num_workers"):
        RayConfig(num_workers=0)
    with pytest.raises(ValueError, match="max_in_flight"):
        RayConfig(max_in_flight=0)


@pytest.mark.ray
def test_two_cpu_actors_give_the_single_process_results(subject, toy_corpus, tmp_path,
                                                         caplog):
    ray = pytest.importorskip("ray")
    evaluator = load_toy_evaluator(device="cpu")
    kw = dict(config=LabelConfig(lr=1.0, steps=8, batch_size=8, threshold=0.0),
              cache=CacheConfig(cache_dir=tmp_path / "cache"),
              examples=ExampleConfig(n_top=6, n_quantile=4, n_random=6, n_near_miss=4),
              features_per_batch=1)
    sae = planted_sae()
    # Each one-CPU actor runs torch on one thread; the reference does too, so both sum their
    # float32 products in the same order (with 2 threads here, the losses differed by 1e-4).
    with one_thread():
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
                # Another process, one thread each: the same sums in the same order.
                assert v == b.metrics[k], (f, k)
        assert a.extra == b.extra
    with RunStore(tmp_path / "ray", create=False) as store:
        assert store.finished() == set(FEATURES)
        assert store.get_meta("info")["evaluator"] == evaluator.name


def _outcome(labels) -> dict[int, tuple]:
    """What an amortised run must reproduce: per feature, its status, label, method and
    steps (every attempt's)."""
    return {f: (labels[f].status, labels[f].label, labels[f].method,
                sum(a.steps for a in labels[f].attempts) or labels[f].steps) for f in labels}


@pytest.mark.ray
@pytest.mark.subprocess
def test_an_amortised_run_on_ray_is_the_run_in_one_process_and_survives_a_killed_driver(
        tmp_path):
    """Descents and verifications on two CPU actors held for the whole run give the labels,
    methods and statuses of the same run in one process; a driver killed with SIGKILL while
    an actor holds a seed batch, rerun, gives them too."""
    ray = pytest.importorskip("ray")
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from saelens_tokenlabel.run.amortise.config import AmortizeConfig
    from saelens_tokenlabel.run.amortise.mode import seed_set
    from saelens_tokenlabel.run.ray_backend import RayExecutor

    from .amortrun import AMORTIZE, GROUP, WORLD, ray_config, run

    with one_thread():  # as the actors: the same float32 sums
        local = run(tmp_path, tmp_path / "local")  # the reference; also fills the cache
    methods = {r.method for r in local.values() if r.status == "ok"}
    assert methods == {"descended", "amortised", "warm_started"}, methods
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        executor = RayExecutor(ray_config())
        on_ray = run(tmp_path, tmp_path / "ray", executor=executor)
        assert _outcome(on_ray) == _outcome(local)
        # One pool for the run: each actor started once and did many calls.
        stats = executor.stats
        assert len(stats["calls"]) == 2 and min(stats["calls"]) >= 2, stats
        assert 0 < stats["busy_fraction"] <= 1, stats

        # The driver, killed while an actor blocks on the last seed batch.
        seeds = seed_set(list(range(WORLD["n_features"])), AmortizeConfig(**AMORTIZE))
        sentinel, marker = seeds[-1], tmp_path / "blocked"
        out = tmp_path / "killed"
        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
        address = ray.get_runtime_context().gcs_address
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.run.amortrun", str(tmp_path), str(out), address,
             str(sentinel), str(marker)], cwd=repo, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        deadline = time.monotonic() + 600
        db = out / "run.sqlite"
        try:
            while (not marker.is_file() or _finished(db) < 1) and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None, "the child ended before the kill"
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
        n_at_kill = _finished(db)
        blocked = [int(f) for f in marker.read_text().split()]
        assert sentinel in blocked and len(blocked) <= GROUP
        assert 1 <= n_at_kill <= len(seeds) - len(blocked)  # mid-run: seeds only, some
        resumed = run(tmp_path, out, executor=RayExecutor(ray_config()))
    finally:
        ray.shutdown()
    assert _outcome(resumed) == _outcome(local)
