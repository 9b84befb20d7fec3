"""A corpus's identity by content: the same documents wherever and whenever the file lies, the
hash remembered (never trusted past a change), and a difference said in words."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from saelens_tokenlabel.sae import Corpus
from saelens_tokenlabel.sae import identity as ident

DOCS = ["The cat sat.", "A dog barked.", "我的猫很可爱", "The fox ran."]


@pytest.fixture(autouse=True)
def _fresh_process_memo(monkeypatch):
    """Each test starts as a new process would: nothing hashed yet."""
    monkeypatch.setattr(ident, "_SEEN", {})


def _write(path, docs):
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return path


def test_touched_copied_and_moved_files_keep_their_identity(tmp_path):
    path = _write(tmp_path / "c.txt", DOCS)
    before = Corpus.of(path).fingerprint()
    assert before == {"kind": "documents", "n": 4, "sha": before["sha"]}
    # The same documents as a list, or as JSONL, are the same corpus.
    assert Corpus.of(DOCS).fingerprint() == before
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n"
                             for i, d in enumerate(DOCS)), encoding="utf-8")
    assert Corpus.of(jsonl).fingerprint() == before
    os.utime(path, ns=(1, 1))
    assert Corpus.of(path).fingerprint() == before
    copy = shutil.copy(path, tmp_path / "copy.txt")
    assert Corpus.of(copy).fingerprint() == before
    moved = path.rename(tmp_path / "moved.txt")
    assert Corpus.of(moved).fingerprint() == before
    assert Corpus.of(_write(tmp_path / "other.txt", DOCS[:3])).fingerprint() != before


def test_the_memo_saves_reading_but_never_decides(tmp_path, monkeypatch):
    memo = tmp_path / "memo"
    path = _write(tmp_path / "c.txt", DOCS)
    first = Corpus.of(path).fingerprint(memo)
    assert (memo / ident.INDEX_FILENAME).is_file() and (memo / f"{first['sha']}.docs").is_file()
    monkeypatch.setattr(ident, "_SEEN", {})  # another process: the memo alone
    read = []
    real = ident.hash_documents
    monkeypatch.setattr(ident, "hash_documents", lambda docs: read.append(1) or real(docs))
    assert Corpus.of(path).fingerprint(memo) == first
    assert read == []  # an unchanged file is not read again
    # Another content with the size and modification time of the first: the change time
    # moved, so the file is read again, and the new documents give another identity.
    stat = path.stat()
    _write(path, ["The cat sat!", *DOCS[1:]])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert Corpus.of(path).fingerprint(memo) != first and read


def test_a_damaged_memo_is_read_around(tmp_path):
    memo = tmp_path / "memo"
    path = _write(tmp_path / "c.txt", DOCS)
    first = Corpus.of(path).fingerprint(memo)
    (memo / ident.INDEX_FILENAME).write_text("{not json")
    ident._SEEN.clear()
    assert Corpus.of(path).fingerprint(memo) == first
    assert json.loads((memo / ident.INDEX_FILENAME).read_text())["format"] == ident.MEMO_FORMAT


def test_a_difference_is_said_in_words(tmp_path):
    memo = tmp_path / "memo"
    old = Corpus.of(_write(tmp_path / "old.txt", DOCS))
    before = old.profile(memo)
    assert before["n_documents"] == 4 and before["size"] == old_size(tmp_path / "old.txt")
    edited = Corpus.of(_write(tmp_path / "new.txt", [*DOCS[:2], "A cow mooed.", DOCS[3]]))
    words = edited.difference(before, memo)
    assert words.startswith(f"another corpus: now text_file {tmp_path / 'new.txt'} (")
    assert f"the run's was text_file {tmp_path / 'old.txt'} (" in words
    assert "4 documents" in words and "\n" not in words
    assert words.endswith("document 3 is the first that differs, now 'A cow mooed.'")
    longer = Corpus.of(_write(tmp_path / "longer.txt", [*DOCS, "More."]))
    assert longer.difference(before, memo).endswith(
        "the first 4 documents are the same, it has 1 more")
    # The run's document hashes elsewhere (another machine): what is known is said.
    assert "first differing document is unknown" in edited.difference(before, tmp_path / "x")
    assert edited.difference(None, memo).startswith("another corpus (now text_file")


def old_size(path):
    return path.stat().st_size


def test_a_local_dataset_folder_is_identified_by_its_files_bytes(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    before = Corpus.of(str(folder)).fingerprint()
    moved = folder.rename(tmp_path / "moved")
    os.utime(moved / "train.jsonl", ns=(1, 1))
    assert Corpus.of(str(moved)).fingerprint() == before
    (moved / "train.jsonl").write_text(json.dumps({"text": "ho"}) + "\n")
    assert Corpus.of(str(moved)).fingerprint() != before
