"""`tokenlabel label` and its inputs, as a newcomer meets them: a corpus identified by its
documents (touched, copied or moved it resumes; edited it says what differs), a failed start
that leaves nothing behind, and loading mistakes said in one line."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from saelens_tokenlabel import LabelSet
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.sae import SIDECAR_FILENAME

from .test_label import saved_inputs, started

QUICK = ["--steps", "2", "--batch-size", "6", "--n-top", "4", "--n-quantile", "4",
         "--n-random", "4", "--n-near-miss", "4", "--device", "cpu", "--no-score", "coherence",
         "--no-score", "steering"]


@pytest.fixture
def inputs(subject, fast_evaluator, tmp_path):
    """The planted SAE, the subject model and the evaluator as folders."""
    return saved_inputs(tmp_path, subject, fast_evaluator)


def label_args(inputs, corpus, out, cache, features="0:3"):
    sae_dir, model_dir, ev_dir = inputs
    return ["label", "--sae-path", str(sae_dir), "--model", str(model_dir), "--corpus",
            str(corpus), "--features", features, "--evaluator", str(ev_dir), "--out", str(out),
            "--cache-dir", str(cache), *QUICK]


def results(out):
    return LabelSet.load(out / SIDECAR_FILENAME).to_dict()["results"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("tokenlabel: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_touched_copied_or_moved_corpus_resumes_without_relabeling(inputs, toy_corpus,
                                                                      tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:30]) + "\n", encoding="utf-8")
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(label_args(inputs, corpus, out, cache)) == 0
    first = results(out)
    caches = sorted(p.name for p in cache.iterdir())
    # touch (a new modification time), a copy elsewhere, a move: the same documents.
    os.utime(corpus, ns=(10**18, 10**18))
    copy = tmp_path / "elsewhere" / "copy.txt"
    copy.parent.mkdir()
    shutil.copy(corpus, copy)
    moved = tmp_path / "moved.txt"
    corpus.rename(moved)
    for path in (copy, moved):
        assert main(label_args(inputs, path, out, cache)) == 0
        assert results(out) == first
        assert started(out) == {0: 1, 1: 1, 2: 1}  # nothing labeled again
    # More features in the folder after the move: the activation cache is the same one.
    assert main(label_args(inputs, moved, out, cache, "0:4")) == 0
    assert started(out) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert sorted(p.name for p in cache.iterdir()) == caches
    capsys.readouterr()


def test_an_edited_document_is_one_line_naming_the_file_and_the_document(inputs, toy_corpus,
                                                                         tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    docs = toy_corpus[:30]
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(label_args(inputs, corpus, out, cache)) == 0
    first = results(out)
    docs[11] = "The whale ate the cherry."
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert main(label_args(inputs, corpus, out, cache)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"text_file {corpus} (" in line and " bytes, 30 documents)" in line
    assert "document 12 is the first that differs, now 'The whale ate the cherry.'" in line
    assert "another output folder" in line
    assert results(out) == first and started(out) == {0: 1, 1: 1, 2: 1}  # nothing lost


def test_a_failed_start_leaves_nothing_and_the_fixed_rerun_finishes(inputs, toy_corpus,
                                                                     tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    out, cache = tmp_path / "run" / "out", tmp_path / "cache"
    assert main(label_args(inputs, empty, out, cache)) == 2
    assert "gave no tokens" in one_error_line(capsys.readouterr().err)
    assert not out.exists() and not out.parent.exists()  # no folder, no store bound
    good = tmp_path / "corpus.txt"
    good.write_text("\n".join(toy_corpus[:30]) + "\n", encoding="utf-8")
    assert main(label_args(inputs, good, out, cache)) == 0
    assert [r["status"] for r in results(out)] == ["ok", "ok", "dead"]


def _broken_sae(inputs, tmp_path, edit):
    folder = tmp_path / "broken_sae"
    shutil.copytree(inputs[0], folder)
    edit(folder / "cfg.json")
    return folder


def _cfg_edit(change):
    def edit(path):
        cfg = json.loads(path.read_text())
        change(cfg)
        path.write_text(json.dumps(cfg))
    return edit


@pytest.mark.parametrize("mistake,expected", [
    ("no d_sae", ["cfg.json lacks 'd_sae'", "sae.save_model(folder)"]),
    ("d_in disagrees", ["do not fit", "cfg.json", "size mismatch for", "d_in or d_sae"]),
    ("truncated", ["cfg.json is not valid JSON", "cut short"]),
])
def test_a_broken_sae_folder_is_one_line_naming_the_file(inputs, toy_corpus, tmp_path, capsys,
                                                         mistake, expected):
    edits = {"no d_sae": _cfg_edit(lambda c: c.pop("d_sae")),
             "d_in disagrees": _cfg_edit(lambda c: c.update(d_in=16)),
             "truncated": lambda p: p.write_text(p.read_text()[:40])}
    folder = _broken_sae(inputs, tmp_path, edits[mistake])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:10]) + "\n", encoding="utf-8")
    args = label_args((folder, *inputs[1:]), corpus, tmp_path / "out", tmp_path / "cache")
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(folder) in line and all(e in line for e in expected), line
    assert not (tmp_path / "out").exists()


def test_a_hub_name_without_network_says_so_and_how_to_pass_a_folder(inputs, toy_corpus,
                                                                    tmp_path, capsys,
                                                                    monkeypatch):
    from transformer_lens import HookedTransformer

    def offline(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, "
                      "and couldn't find them in the cached files.\nCheck your internet "
                      "connection or see how to run the library in offline mode.")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", offline)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:10]) + "\n", encoding="utf-8")
    args = label_args(inputs, corpus, tmp_path / "out", tmp_path / "cache")
    args[args.index("--evaluator") + 1] = "Qwen/Qwen2.5-0.5B-Instruct"
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "'Qwen/Qwen2.5-0.5B-Instruct' from the Hugging Face hub" in line
    assert "couldn't connect" in line and "--evaluator DIR" in line
    assert "stl.save_local_model" in line and not (tmp_path / "out").exists()


def test_a_damaged_model_folder_is_one_line_naming_the_file(inputs, toy_corpus, tmp_path,
                                                            capsys):
    from saelens_tokenlabel.evaluator.loading import LOCAL_CONFIG

    model_dir = tmp_path / "broken_model"
    shutil.copytree(inputs[1], model_dir)
    text = (model_dir / LOCAL_CONFIG).read_text()
    (model_dir / LOCAL_CONFIG).write_text(text.replace('"d_model": 32', '"d_model": 16'))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:10]) + "\n", encoding="utf-8")
    args = label_args((inputs[0], model_dir, inputs[2]), corpus, tmp_path / "out",
                      tmp_path / "cache")
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{model_dir / 'model.safetensors'} do not fit {model_dir / LOCAL_CONFIG}" in line
    assert "size mismatch" in line and "save_local_model" in line
    (model_dir / LOCAL_CONFIG).write_text(text[:50])
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{model_dir / LOCAL_CONFIG} is not valid JSON" in line


def test_features_out_of_range_are_counted(inputs, tmp_path, capsys):
    args = label_args(inputs, tmp_path / "c.txt", tmp_path / "out", tmp_path / "cache",
                      features="5:100")
    (tmp_path / "c.txt").write_text("The cat sat.\n")
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "92 indices are out of range (8..99)" in line and "d_sae=8" in line


def test_a_run_folder_from_before_content_identity_still_resumes(inputs, toy_corpus, tmp_path,
                                                                 capsys):
    """A store bound by an earlier version (the corpus by its path, size and modification
    time) resumes while the file is untouched, and is rebound to the documents' identity."""
    from saelens_tokenlabel.run import RunStore
    from saelens_tokenlabel.sae import Corpus
    from saelens_tokenlabel.sae.fingerprint import digest

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:30]) + "\n", encoding="utf-8")
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(label_args(inputs, corpus, out, cache)) == 0
    first = results(out)
    with RunStore(out) as store:  # as an earlier version bound it
        identity = store.get_meta("identity")
        now = identity["corpus"]
        old = {**identity, "corpus": digest(Corpus.of(corpus).path_fingerprint())}
        info = store.get_meta("info")
        info.pop("corpus_profile")
        store.set_meta(identity=old, info=info)
    assert main(label_args(inputs, corpus, out, cache)) == 0
    assert results(out) == first and started(out) == {0: 1, 1: 1, 2: 1}
    with RunStore(out, create=False) as store:
        assert store.get_meta("identity")["corpus"] == now
    capsys.readouterr()
