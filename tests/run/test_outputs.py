"""Output files that cannot be written (`run/outputs.py`): a full disk or a read-only folder is
one line naming the files not written and saying that the labels are safe in run.sqlite;
`tokenlabel export` writes them once the disk has room."""

from __future__ import annotations

import errno

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.records.errors import OutputNotWrittenError
from saelens_tokenlabel.records.names import LABELS_TSV, NEURONPEDIA_JSONL, SIDECAR_FILENAME
from saelens_tokenlabel.run.export import export_run
from saelens_tokenlabel.sae import LabelSet

from ..faults import one_line, results, unwritable


@pytest.mark.parametrize("code, reason, fix", [
    (errno.ENOSPC, "No space left on device", "free some space"),
    (errno.EROFS, "Read-only file system", "make {run} writable"),
], ids=["full disk", "read-only file system"])
def test_outputs_that_cannot_be_written_say_the_labels_are_safe(
        fault_world, tmp_path, capsys, monkeypatch, code, reason, fix):
    run = fault_world.copy(tmp_path)
    outputs = (SIDECAR_FILENAME, LABELS_TSV, NEURONPEDIA_JSONL)
    for name in outputs:
        (run / name).unlink()
    with unwritable(run, monkeypatch, code):  # the store stays writable: only the outputs fail
        assert main(fault_world.args(run)) == 2
    one_line(capsys, *outputs, reason, f"The 8 labels are safe in {run / 'run.sqlite'}",
             fix.format(run=run), f"tokenlabel export {run}")
    assert not any((run / name).exists() for name in outputs)
    assert not list(run.glob(".*.tmp-*"))  # no half-written file left behind
    assert results(run) == results(fault_world.out)
    # Space again: the export writes them, from the store.
    assert main(["export", str(run)]) == 0
    assert LabelSet.load(run / SIDECAR_FILENAME).to_dict()["results"] == \
        LabelSet.load(fault_world.out / SIDECAR_FILENAME).to_dict()["results"]


def test_a_read_only_export_folder_is_one_line_naming_what_was_not_written(
        fault_world, tmp_path, capsys, monkeypatch):
    run = fault_world.copy(tmp_path)
    to = tmp_path / "read_only"
    with unwritable(to, monkeypatch):
        assert main(["export", str(run), "--to", str(to), "--format", "csv"]) == 2
        line = one_line(capsys, SIDECAR_FILENAME, NEURONPEDIA_JSONL, "labels.csv",
                        f"safe in {run / 'run.sqlite'}", f"make {to} writable")
        assert "Permission denied" in line
        with pytest.raises(OutputNotWrittenError) as err:  # the Python API: the same error
            export_run(run, to, table_format="csv")
        assert str(err.value) == line.removeprefix("tokenlabel: error: ")
    assert not any(to.iterdir())
    assert results(run) == results(fault_world.out)
