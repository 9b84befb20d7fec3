from __future__ import annotations

import logging

import pytest

from saelens_tokenlabel.cli import build_parser, main
from saelens_tokenlabel.report import load_run


def test_report_command_from_a_sidecar(toy_labels, tmp_path, capsys):
    toy_labels.save(tmp_path / "run")
    assert main(["report", str(tmp_path / "run")]) == 0
    index = tmp_path / "run" / "report" / "index.html"
    assert str(index.resolve()) in capsys.readouterr().out
    assert "animal" in index.read_text()
    assert (tmp_path / "run" / "report" / "plots" / "0.png").is_file()
    # A sidecar file works too, and --out, --features, --no-plots.
    assert main(["report", str(tmp_path / "run" / "tokenlabel_labels.json"), "--out",
                 str(tmp_path / "r2"), "--features", "0:2", "--no-plots"]) == 0
    assert sorted(p.name for p in (tmp_path / "r2" / "features").iterdir()) == ["0.html",
                                                                                 "1.html"]
    assert not (tmp_path / "r2" / "plots").exists()


def test_report_reads_the_run_store_first(toy_labels, tmp_path):
    from saelens_tokenlabel.run import RunStore

    run = tmp_path / "run"
    with RunStore(run) as store:
        store.set_meta(info=toy_labels.info)
        store.put([toy_labels[0], toy_labels[2]])
    # A stale sidecar with other labels: the store wins.
    toy_labels[1].label = "stale-sidecar-label"
    toy_labels.save(run)
    got = load_run(run)
    assert sorted(got) == [0, 2] and got.info["hook_name"] == toy_labels.info["hook_name"]
    assert main(["report", str(run)]) == 0
    html = (run / "report" / "index.html").read_text()
    assert "animal" in html and "stale-sidecar-label" not in html


def test_an_unreadable_run_store_is_an_error_or_falls_back_to_the_sidecar(toy_labels, tmp_path,
                                                                         capsys, caplog):
    (tmp_path / "run.sqlite").write_bytes(b"not a database")
    assert main(["report", str(tmp_path)]) == 2
    assert "not a readable run store" in capsys.readouterr().err
    toy_labels.save(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert sorted(load_run(tmp_path)) == sorted(toy_labels)
    assert "not a readable run store" in caplog.text and "instead" in caplog.text


def test_clear_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "No labels in" in err and "run.sqlite" in err and "tokenlabel_labels.json" in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not an index or a range"):
        from saelens_tokenlabel.cli.report import parse_feature_list

        parse_feature_list("0:x")


def test_registered_in_the_tokenlabel_command():
    help_text = build_parser().format_help()
    assert "report" in help_text
