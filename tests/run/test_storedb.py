"""A damaged or read-only run store (`run/storedb.py`): one line naming the file (and the
feature), never SQLite's traceback; `tokenlabel export` writes every result that can still be
read; nothing stored is lost or written over."""

from __future__ import annotations

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.records.errors import StoreDamagedError, StoreReadOnlyError
from saelens_tokenlabel.run import RunStore, load_labelset
from saelens_tokenlabel.sae import LabelSet

from ..faults import (
    one_line,
    overwrite_page_of,
    read_only_store,
    results,
    tamper_result,
)


def test_a_damaged_page_is_one_line_and_export_writes_every_readable_result(
        fault_world, tmp_path, capsys, monkeypatch):
    run = fault_world.copy(tmp_path)
    before = results(run)
    assert len(before) == 8
    page = overwrite_page_of(run / "run.sqlite", 4)
    # Reading it: one line naming the file, what SQLite and its integrity check say, the way
    # out. Through the CLI and the Python API alike.
    assert main(["status", str(run)]) == 2
    line = one_line(capsys, str(run / "run.sqlite"), "malformed",
                    "PRAGMA integrity_check failed", "tokenlabel export")
    with pytest.raises(StoreDamagedError) as err:
        load_labelset(run)
    assert str(err.value) == line.removeprefix("tokenlabel: error: ")
    # A rerun of the same command stops there too, before labeling anything.
    assert main(fault_world.args(run)) == 2
    one_line(capsys, str(run / "run.sqlite"), "tokenlabel export")
    # The export reads the rest: every result but feature 4's, as it was stored.
    exported = tmp_path / "exported"
    assert main(["export", str(run), "--to", str(exported), "--format", "csv"]) == 0
    warning = one_line(capsys, "1 features", "4 (its page of the file is damaged)")
    assert warning.startswith("tokenlabel: warning:")
    got = LabelSet.load(exported)
    assert {f: got[f].to_dict() for f in got} == {f: r for f, r in before.items() if f != 4}
    table = (exported / "labels.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == ["0", "1", "2", "3", "5", "6", "7"]
    assert page > 1
    # As the message says: the labeling command on the export's folder seeds a new store
    # from it and labels only feature 4, which comes back as it was.
    started, start = [], RunStore.start
    monkeypatch.setattr(RunStore, "start", lambda self, fs: (started.extend(fs),
                                                             start(self, fs)))
    assert main(fault_world.args(exported)) == 0
    assert started == [4]
    assert results(exported) == before


def test_a_tampered_result_names_its_feature_and_export_writes_the_others(
        fault_world, tmp_path, capsys):
    run = fault_world.copy(tmp_path)
    before = results(run)
    tamper_result(run / "run.sqlite", 7)  # the last one finished: `status` shows it
    assert main(["status", str(run)]) == 2
    one_line(capsys, str(run / "run.sqlite"), "the stored result of feature 7 does not parse",
             "tokenlabel export")
    with pytest.raises(StoreDamagedError, match="feature 7"):
        load_labelset(run)
    assert main(["export", str(run), "--to", str(tmp_path / "exported")]) == 0
    one_line(capsys, "7 (its stored result does not parse")
    got = LabelSet.load(tmp_path / "exported")
    assert {f: got[f].to_dict() for f in got} == {f: r for f, r in before.items() if f != 7}


def test_a_read_only_store_is_one_line_and_stays_as_it_was(
        fault_world, tmp_path, capsys, monkeypatch):
    run = fault_world.copy(tmp_path)
    before = (run / "run.sqlite").read_bytes()
    with read_only_store(run, monkeypatch):
        assert main(fault_world.args(run)) == 2
        one_line(capsys, str(run / "run.sqlite"), "read-only", "another --out")
        with pytest.raises(StoreReadOnlyError, match="is intact"), RunStore(run) as store:
            store.add_features([0])  # the Python API: the same error
        # Reading needs no writing: status and export still work.
        assert main(["status", str(run)]) == 0
        assert "8/8 finished" in capsys.readouterr().out
        assert main(["export", str(run), "--to", str(tmp_path / "exported")]) == 0
        assert LabelSet.load(tmp_path / "exported").to_dict()["results"] == \
            LabelSet.load(fault_world.out).to_dict()["results"]
    assert (run / "run.sqlite").read_bytes() == before
    assert results(run) == results(fault_world.out)


def test_salvage_mode_reads_every_row_of_a_sound_store_as_the_plain_reads_do(
        fault_world):
    with RunStore(fault_world.out, create=False) as plain, \
            RunStore(fault_world.out, create=False, salvage=True) as salvage:
        assert salvage.rows() == plain.rows()
        assert [r.to_dict() for r in salvage.results()] == \
            [r.to_dict() for r in plain.results()]
        assert salvage.damaged == {}
