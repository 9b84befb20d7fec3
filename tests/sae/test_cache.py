"""An activation cache file that cannot be read (`sae/cache.py`): `tokenlabel label` rebuilds
the cache, saying which file it could not read (the cache is derived data, keyed by everything
it depends on, so the rebuilt one is the same, and it holds no labels); a reader that cannot
rebuild it (`tokenlabel compare`, `ActivationCache.open`) gets one line naming the file and
``--overwrite-cache``."""

from __future__ import annotations

import logging

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.records.errors import CacheDamagedError
from saelens_tokenlabel.sae.cache import META_FILENAME, ActivationCache

from ..faults import one_line, results


def _compare(fault_world, run, tmp_path) -> list[str]:
    tsv = tmp_path / "explanations.tsv"
    tsv.write_text("0\tanimals\n1\tdigits\n", encoding="utf-8")
    root = fault_world.root
    return ["compare", str(run), "--explanations", str(tsv), "--evaluator", str(root / "ev"),
            "--model", str(root / "model"), "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated shard", "garbled meta.json"])
def test_a_damaged_cache_is_rebuilt_by_label_and_one_line_for_its_readers(
        fault_world, tmp_path, capsys, caplog, damage):
    run = fault_world.copy(tmp_path, cache=True)
    (folder,) = [p.parent for p in (tmp_path / "cache").rglob(META_FILENAME)]
    if damage == "truncated shard":
        bad = folder / "shard_00000.safetensors"
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
        problem = "truncated"
    else:
        bad = folder / META_FILENAME
        bad.write_text('{"format_version": 3, "complete": tr', encoding="utf-8")
        problem = "not JSON"
    before = results(run)
    # Readers of the run's own cache cannot rebuild it: one line, the file and the fix.
    assert main(_compare(fault_world, run, tmp_path)) == 2
    one_line(capsys, str(bad), problem, "--overwrite-cache")
    with pytest.raises(CacheDamagedError, match="--overwrite-cache"):
        ActivationCache.open(folder)
    # Labeling rebuilds it, says so, and labels as the run with the sound cache did.
    again = tmp_path / "again"
    with caplog.at_level(logging.WARNING, logger="saelens_tokenlabel.sae.activations"):
        assert main(fault_world.args(again, cache=tmp_path / "cache")) == 0
    assert f"the activation cache file {bad} cannot be read ({problem}" in caplog.text
    assert "rebuilding the cache" in caplog.text
    assert results(again) == results(fault_world.out) == before
    ActivationCache.open(folder)  # whole again: compare reads it
    capsys.readouterr()
    assert main(_compare(fault_world, run, tmp_path)) == 0
