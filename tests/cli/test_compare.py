"""`tokenlabel compare DIR --explanations SRC`: defaults from the run, the files it writes,
what it prints, the report's column; and one-line errors."""

from __future__ import annotations

import gzip
import json

import pytest

from saelens_tokenlabel.cli import main
from saelens_tokenlabel.cli.compare import evaluator_name, subject_tokenizer
from saelens_tokenlabel.formats.comparison import COMPARE_JSON, COMPARE_TSV, Comparison

from ..explanation_files import write_layouts
from ..sae.compare_run import EXPLANATIONS, LATER, labeled_run


@pytest.fixture(scope="module")
def run(toy_evaluator, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_compare")
    run_dir, tok_dir = labeled_run(d, toy_evaluator)
    return run_dir, tok_dir, write_layouts(EXPLANATIONS, d / "sources", later=LATER)


@pytest.mark.slow
def test_compare_writes_the_table_and_the_records_and_the_report_shows_them(run, capsys):
    run_dir, tok_dir, files = run
    # No --evaluator: the run's ("toy-llama-evaluator", the bundled toy evaluator).
    assert main(["compare", str(run_dir), "--explanations", str(files["batches"]),
                 "--model", str(tok_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "ours wins 2, ties 2, loses 0; mean difference (ours - theirs) +" in out
    assert "4 features from" in out and "(neuronpedia-batches; 1 duplicate dropped" in out
    assert "'Chinese characters for cat and dog' (14)" in out  # the table's head
    comparison = Comparison.load(run_dir / COMPARE_JSON)
    assert [r.feature for r in comparison.features] == [0, 1, 3, 4]
    lines = (run_dir / COMPARE_TSV).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and lines[1].startswith("0\ttie\t0\tanimal\t1\t")
    assert main(["report", str(run_dir), "--no-plots"]) == 0
    html = (run_dir / "report" / "index.html").read_text(encoding="utf-8")
    assert "their explanation" in html and "Against existing explanations" in html
    assert '<td class="winner ours">ours</td>' in html
    assert "ours wins 2, ties 2, loses 0" in html


@pytest.mark.slow
def test_metric_and_features_flags(run, capsys):
    run_dir, tok_dir, files = run
    assert main(["compare", str(run_dir), "--explanations", str(files["delphi"]), "--model",
                 str(tok_dir), "--evaluator", "toy", "--metric", "f1", "--features", "0,1,2",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3 features" not in out and "2 features, held-out f1: ours wins 1, ties 1" in out
    saved = json.loads((run_dir / COMPARE_JSON).read_text(encoding="utf-8"))
    assert saved["not_compared"] == {"2": "no label in the run (dead)"}
    assert saved["source"]["format"] == "delphi" and saved["source"]["module"] == "layers.0"


def test_a_bad_source_is_one_line_before_any_model_loads(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("these are my notes\n", encoding="utf-8")
    assert main(["compare", str(tmp_path), "--explanations", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tokenlabel: error: --explanations ") and "\n" not in err
    assert "feature<TAB>explanation" in err


def test_defaults_from_the_run():
    assert evaluator_name(None, {"evaluator": "toy-llama-evaluator"}) == "toy"
    assert evaluator_name(None, {"evaluator": "meta-llama/Llama-3.1-8B-Instruct"}) == (
        "meta-llama/Llama-3.1-8B-Instruct")
    assert evaluator_name("other", {"evaluator": "toy-llama-evaluator"}) == "other"
    with pytest.raises(ValueError, match="pass --evaluator"):
        evaluator_name(None, {})
    with pytest.raises(ValueError, match="pass --model"):
        subject_tokenizer(None)


@pytest.mark.slow
def test_explanations_of_features_beyond_the_sae_are_printed_with_a_count(run, tmp_path,
                                                                         capsys):
    run_dir, tok_dir, _ = run
    tsv = tmp_path / "mixed.tsv"
    tsv.write_text("feature\texplanation\n0\tanimal\n99\tdogs\n1\tcolor\n4096\tcats\n",
                   encoding="utf-8")
    assert main(["compare", str(run_dir), "--explanations", str(tsv), "--model",
                 str(tok_dir), "--evaluator", "toy", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    unknown = [x for x in out.splitlines() if x.startswith("unknown:")]
    assert unknown == ["unknown:      2 explanations of features the SAE does not have "
                       "(d_sae=8), skipped: 99, 4096; is the source of this SAE?"]
    assert json.loads((run_dir / COMPARE_JSON).read_text())["unused_explanations"] == 2


def test_a_gzip_cut_inside_its_first_line_is_one_line_naming_it(tmp_path, capsys):
    whole = gzip.compress(("".join(json.dumps({"index": str(f), "description": "x" * 4000})
                                   + "\n" for f in range(3))).encode())
    cut = tmp_path / "explanations.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 3])  # the cut falls inside the first line
    assert main(["compare", str(tmp_path), "--explanations", str(cut)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"tokenlabel: error: --explanations {cut}: ")
    assert "truncated" in err[0] and "EOFError" in err[0]


def test_an_explanation_file_that_is_not_utf8_names_its_line(tmp_path, capsys):
    tsv = tmp_path / "explanations.tsv"
    lines = [f"{f}\tmentions of animals and their habitats" for f in range(400)]
    lines[300] = "300\tcaf\u00e9 and restaurants"
    tsv.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))  # > 8 KB before the bad byte
    assert main(["compare", str(tmp_path), "--explanations", str(tsv)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"tokenlabel: error: --explanations {tsv}: ")
    assert "line 301 is not UTF-8 (byte 0xe9 at offset 7 in the line)" in err[0]
