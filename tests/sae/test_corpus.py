"""Corpus sources: strings, text and JSONL files, and datasets through `load_dataset`
(streamed), each with a fingerprint for the cache key."""

from __future__ import annotations

import json
import os

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
