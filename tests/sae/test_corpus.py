"""Corpus sources: strings, text and JSONL files, and datasets through `load_dataset`
(streamed), each with a fingerprint for the cache key."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import pytest

from saelens_tokenlabel.sae import Corpus, CorpusError

DOCS = ["The cat sat.", "A dog barked.", "我的猫很可爱"]


def test_list_of_strings(tmp_path):
    c = Corpus.of(DOCS)
    assert list(c) == DOCS and c.kind == "texts"
    assert c.fingerprint() == Corpus.of(list(DOCS)).fingerprint()
    assert c.fingerprint() != Corpus.of(DOCS[:2]).fingerprint()
    with pytest.raises(CorpusError, match="not a str"):
        Corpus.of(["ok", 3])
    with pytest.raises(CorpusError, match="empty"):
        Corpus.of([])
    with pytest.raises(CorpusError, match="list"):
        Corpus.of(iter(DOCS))


def test_text_file_one_document_per_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join([DOCS[0], "", DOCS[1], DOCS[2]]) + "\n", encoding="utf-8")
    c = Corpus.of(str(path))
    assert c.kind == "text_file" and list(c) == DOCS
    before = c.fingerprint()
    path.write_text("changed\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert Corpus.of(path).fingerprint() != before


def test_jsonl_file_and_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"body": d, "n": i}) + "\n" for i, d in enumerate(DOCS)),
                    encoding="utf-8")
    assert list(Corpus.of(path, text_field="body")) == DOCS
    with pytest.raises(CorpusError, match="text_field"):
        list(Corpus.of(path))
    with pytest.raises(CorpusError, match="does not exist"):
        Corpus.of(tmp_path / "missing.jsonl")


def test_dataset_folder_through_load_dataset_streaming(tmp_path, monkeypatch):
    import datasets

    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda *a, **k: calls.append(k) or real(*a, **k))
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"text": d}) + "\n" for d in DOCS), encoding="utf-8")
    c = Corpus.of(str(folder))
    assert c.kind == "hf"
    assert list(c) == DOCS
    assert calls and all(k["streaming"] is True and k["split"] == "train" for k in calls)
    fp = c.fingerprint()
    assert fp["kind"] == "hf" and fp["files"]
    assert Corpus.of("hf:someone/some-dataset").source == "someone/some-dataset"
    assert Corpus.of("someone/some-dataset").kind == "hf"


def test_a_dataset_without_the_datasets_extra_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    corpus = Corpus.of("hf:someone/some-dataset")  # naming it needs nothing yet
    with pytest.raises(CorpusError, match=r"saelens-tokenlabel\[datasets\]") as err:
        next(iter(corpus))
    assert "\n" not in str(err.value)


HEAVY_OPTIONAL = {"datasets", "matplotlib", "nbclient", "nbformat", "pyarrow", "ray"}


def _import_time_imports(tree: ast.AST) -> list[str]:
    """Absolute imports that run when the module is imported: everything outside function
    bodies (class bodies, ``try``/``if`` blocks included)."""
    out, todo = [], list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.append(node.module or "")
        todo.extend(ast.iter_child_nodes(node))
    return out


def test_heavy_optional_packages_are_imported_only_where_used():
    """No module of the package imports an optional dependency at import time: each is
    imported inside the function that needs it, so a core install never needs them."""
    import saelens_tokenlabel

    root = Path(saelens_tokenlabel.__file__).parent
    found = [f"{path.relative_to(root)}: {name}" for path in sorted(root.rglob("*.py"))
             for name in _import_time_imports(ast.parse(path.read_text(encoding="utf-8")))
             if name.split(".")[0] in HEAVY_OPTIONAL]
    assert not found, found


def test_a_corpus_of_whitespace_is_the_same_error_in_python_and_on_the_command_line(
        tmp_path, subject, sae, fast_evaluator):
    from saelens_tokenlabel.run.pipeline import label_sae_features
    from saelens_tokenlabel.sae import CacheConfig
    from saelens_tokenlabel.sae.activations import build_activation_cache
    from saelens_tokenlabel.sae.subject import Subject

    blank = ["  ", "\n", "\t "]
    cache = CacheConfig(cache_dir=tmp_path / "cache")
    # It used to be labeled: every feature stored as `dead`.
    with pytest.raises(CorpusError, match="no tokens: all 3 documents are empty or whitespace"):
        label_sae_features(sae, subject, fast_evaluator, blank, [0], cache=cache,
                           run_dir=tmp_path / "run")
    assert not (tmp_path / "cache").exists()  # refused before any pass of the model
    # The same lines as a .txt corpus (what `tokenlabel label --corpus` reads): the same type.
    path = tmp_path / "blank.txt"
    path.write_text("\n".join(blank) + "\n")
    with pytest.raises(CorpusError, match="gave no tokens"):
        build_activation_cache(Subject.of(subject, sae), path, [0], cache)
