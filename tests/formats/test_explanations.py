"""Reading existing explanations: Neuronpedia (JSONL, .jsonl.gz, batch folder), delphi's
explanations folder, feature<TAB>text; the format detected, duplicates dropped by file order,
and one-line errors for anything else."""

from __future__ import annotations

import gzip
import json

import pytest

from saelens_tokenlabel.formats.explanations import (
    DELPHI,
    FIRST_BY_FILE_ORDER,
    NEURONPEDIA_BATCHES,
    NEURONPEDIA_JSONL,
    TSV,
    ExplanationSource,
    ExplanationSourceError,
    read_explanations,
)

from ..explanation_files import np_record, write_layouts

TEXTS = {0: "animal", 1: "color", 3: "Chinese characters for cat and dog", 12: "food"}


def texts(source: ExplanationSource) -> dict[int, str]:
    return {f: e.text for f, e in source.explanations.items()}


def test_every_layout_gives_the_same_explanations(tmp_path):
    paths = write_layouts(TEXTS, tmp_path, later={0: "color", 12: "animal"})
    formats = {"jsonl": NEURONPEDIA_JSONL, "gz": NEURONPEDIA_JSONL,
               "batches": NEURONPEDIA_BATCHES, "delphi": DELPHI, "tsv": TSV}
    for name, path in paths.items():
        source = read_explanations(path)
        assert texts(source) == TEXTS, name
        assert source.info.format == formats[name]
        assert source.info.rule == FIRST_BY_FILE_ORDER
        assert source.info.n_explanations == len(TEXTS)
        assert source.info.duplicates == (0 if name == "delphi" else 2), name
    # The folder above explanations/ (a delphi results folder) is read from it.
    assert texts(read_explanations(paths["delphi"].parent)) == TEXTS


def test_neuronpedia_records_and_where_they_came_from(tmp_path):
    path = tmp_path / "x.jsonl"
    records = [np_record(5, "  dogs  "), {**np_record(6, "cats"), "index": 6},
               np_record(5, "later", type_name="other")]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    source = read_explanations(path)
    assert texts(source) == {5: "dogs", 6: "cats"}  # stripped; an int index is taken too
    e = source.explanations[5]
    assert (e.where, e.type_name, e.model) == ("x.jsonl:1", "oai_token-act-pair", "gpt-4o-mini")
    assert source.info.neuronpedia_ids == ("tiny-subject/0-res-test",)
    # --type-name keeps one explainer's explanations; the others are counted as skipped.
    other = read_explanations(path, type_name="other")
    assert texts(other) == {5: "later"}
    assert (other.info.skipped, other.info.duplicates) == (2, 0)
    with pytest.raises(ExplanationSourceError, match="no explanation has typeName 'nope'"):
        read_explanations(path, type_name="nope")


def test_batch_folders_are_read_in_batch_number_order(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    for n, text in ((10, "ten"), (2, "two"), (9, "nine")):
        with gzip.open(folder / f"batch-{n}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.write(json.dumps(np_record(7, text)) + "\n")
    source = read_explanations(folder)
    assert texts(source) == {7: "two"}
    assert source.explanations[7].where == "batch-2.jsonl.gz:1"
    assert source.info.duplicates == 2


def test_delphi_modules(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    for name, text in (("layers.5.mlp_latent3.txt", "three"), ("layers.5.mlp_latent12.txt",
                       "twelve"), ("layers.6_latent3.txt", "other layer")):
        (folder / name).write_text(json.dumps(text), encoding="utf-8")
    with pytest.raises(ExplanationSourceError, match=r"several modules \(layers.5.mlp, "
                       r"layers.6\); choose one with --module"):
        read_explanations(folder)
    source = read_explanations(folder, module="layers.5.mlp")
    assert texts(source) == {3: "three", 12: "twelve"}
    assert (source.info.module, source.info.skipped) == ("layers.5.mlp", 1)
    assert source.explanations[12].where == "layers.5.mlp_latent12.txt"
    with pytest.raises(ExplanationSourceError, match="no delphi explanations of module 'x'"):
        read_explanations(folder, module="x")
    (folder / "layers.6_latent4.txt").write_text("not json", encoding="utf-8")
    with pytest.raises(ExplanationSourceError, match="not a JSON string"):
        read_explanations(folder, module="layers.6")


def test_tsv_header_empty_lines_and_duplicates(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("3\tcats\tand dogs\n\n4\t \n3\tlater\n", encoding="utf-8")
    source = read_explanations(path)  # no header: the first line is data
    assert texts(source) == {3: "cats\tand dogs"}
    assert (source.info.duplicates, source.info.skipped) == (1, 1)
    path.write_text("feature\ttext\n3\tcats\nx\tdogs\n", encoding="utf-8")
    with pytest.raises(ExplanationSourceError, match=r"x.txt:3: expected feature<TAB>"):
        read_explanations(path)


@pytest.mark.parametrize("content, match", [
    ("just some words\n", "neither a JSON object .* nor feature<TAB>explanation"),
    ("", "the file is empty"),
    ('{"index": "1"}\n', "no 'description' and 'index'"),
    ('{"index": "one", "description": "x"}\n', "'index' is 'one'"),
    ('{"index": "1", "description": "x"}\nnot json\n', r"x.jsonl:2 is not JSON"),
    ("\n".join(json.dumps({**np_record(1, "a"), "layer": layer}) for layer in ("0-a", "1-b")),
     "explanations of several SAEs"),
])
def test_what_is_not_an_explanation_source_is_a_one_line_error(tmp_path, content, match):
    path = tmp_path / "x.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ExplanationSourceError, match=match) as err:
        read_explanations(path)
    assert "\n" not in str(err.value)


def test_folders_and_paths_that_hold_no_explanations(tmp_path):
    (tmp_path / "readme.md").write_text("hi", encoding="utf-8")
    with pytest.raises(ExplanationSourceError, match="neither Neuronpedia's batch-N"):
        read_explanations(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        read_explanations(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(ExplanationSourceError, match="cannot be read as UTF-8 text"):
        read_explanations(tmp_path / "bad.jsonl.gz")


def test_a_plain_mapping_is_a_source():
    source = ExplanationSource.of({"2": " two ", 5: ""})
    assert texts(source) == {2: "two"}
    assert (source.info.format, source.info.skipped, len(source)) == ("dict", 1, 1)
