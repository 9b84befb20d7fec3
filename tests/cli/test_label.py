"""`tokenlabel label`: an SAE saved on disk, a local subject model, a corpus file and an
evaluator folder in; labels, the sidecar file and Neuronpedia JSONL out."""

from __future__ import annotations

import json

import pytest

from saelens_tokenlabel import LabelSet, save_local_model
from saelens_tokenlabel.cli import main
from saelens_tokenlabel.records.features import parse_features
from saelens_tokenlabel.run import load_labelset
from saelens_tokenlabel.sae import SIDECAR_FILENAME

from ..sae.planted import NEURONPEDIA_ID, planted_sae


def test_parse_features():
    assert parse_features("all", 10) is None
    assert parse_features("0:3", 10) == [0, 1, 2]
    assert parse_features("1,5,2:4", 10) == [1, 5, 2, 3]
    assert parse_features("8:", 10) == [8, 9]
    with pytest.raises(ValueError, match="out of range"):
        parse_features("0:11", 10)
    with pytest.raises(ValueError, match="START:STOP"):
        parse_features("a", 10)
    with pytest.raises(ValueError, match=r"1 index is out of range \(-1\)"):
        parse_features("-1", 10)
    with pytest.raises(ValueError, match="selects no feature"):
        parse_features("5:5", 10)


def test_parse_features_labels_a_repeated_index_once(caplog):
    with caplog.at_level("WARNING", logger="saelens_tokenlabel.records.features"):
        assert parse_features("0:3,2,1", 10) == [0, 1, 2]
    assert "lists 2 features more than once" in caplog.text


def saved_inputs(tmp_path, subject, fast_evaluator):
    """The planted SAE, the subject model and the evaluator saved as folders, as a user passes
    them to `tokenlabel label` (--sae-path, --model, --evaluator)."""
    sae_dir, model_dir, ev_dir = tmp_path / "sae", tmp_path / "model", tmp_path / "ev"
    planted_sae().save_model(sae_dir)
    save_local_model(subject, model_dir)
    save_local_model(fast_evaluator.model, ev_dir)
    return sae_dir, model_dir, ev_dir


QUICK = ("--steps", "2", "--n-top", "4", "--n-quantile", "4", "--n-random", "4", "--n-near-miss",
         "4", "--device", "cpu")
"""A few steps on a few examples: the CLI's path, not a good label."""


def label_argv(tmp_path, inputs, corpus, features, *extra, out=None):
    """`tokenlabel label` on the saved `inputs` (`saved_inputs`), `corpus` and `features`, the
    cache in tmp_path/cache, the run in `out` (default tmp_path/out), then `extra`."""
    sae_dir, model_dir, ev_dir = inputs
    return ["label", "--sae-path", str(sae_dir), "--model", str(model_dir), "--corpus",
            str(corpus), "--features", features, "--evaluator", str(ev_dir), "--out",
            str(out or tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra]


def test_label_command_writes_labels_sidecar_and_jsonl(subject, fast_evaluator, toy_corpus,
                                                       tmp_path, capsys, monkeypatch):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in toy_corpus[:50]))
    out = tmp_path / "out"
    args = label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:3", *QUICK,
                      "--batch-size", "6", "--save-sae")
    assert main(args) == 0
    printed = capsys.readouterr().out
    labels = LabelSet.load(out / SIDECAR_FILENAME)
    assert list(labels) == [0, 1, 2] and labels[2].status == "dead"
    assert labels.info["label_config"]["steps"] == 2
    assert labels.info["example_config"]["n_top"] == 4
    tsv = (out / "labels.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["feature", "status", "label", "probability", "score",
                                  "verdict", "heldout_low", "heldout_high", "reason"]
    assert [line.split("\t")[:2] for line in tsv[1:]] == [["0", "ok"], ["1", "ok"],
                                                          ["2", "dead"]]
    # Every label carries its verdict, in the table and the summary printed.
    rows = [line.split("\t") for line in tsv[1:]]
    assert [row[5] for row in rows] == [labels[f].verdict.value for f in (0, 1, 2)]
    assert rows[2][5] == "dead" and all(row[8] for row in rows)
    assert f"{labels[0].verdict.value}" in printed.split("labeled:")[1]
    records = [json.loads(x) for x in (out / "neuronpedia.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == ["0", "1"]
    assert all(f"{r['modelId']}/{r['layer']}" == NEURONPEDIA_ID for r in records)
    assert "neuronpedia:  2 explanation records" in printed
    # --save-sae: the SAE with labels attached, sidecar beside cfg.json.
    saved = json.loads((out / "sae" / "cfg.json").read_text())
    assert saved["metadata"]["tokenlabel"]["labels"]["0"]["label"] == labels[0].label
    assert (out / "sae" / SIDECAR_FILENAME).is_file()
    # A second run resumes from the store (OUT/run.sqlite): nothing is labeled again.
    assert (out / "run.sqlite").is_file()
    assert main(args) == 0
    assert LabelSet.load(out / SIDECAR_FILENAME).to_dict()["results"] == \
        labels.to_dict()["results"]
    # A folder from before the store (sidecar only) seeds a new store from the sidecar.
    (out / "run.sqlite").unlink()
    assert main(args) == 0
    assert started(out) == {0: 1, 1: 1, 2: 1}  # seeded from the sidecar, nothing labeled
    assert LabelSet.load(out / SIDECAR_FILENAME).to_dict()["results"] == \
        labels.to_dict()["results"]
    assert sorted(load_labelset(out)) == [0, 1, 2]
    # More features in the same folder: only the new one is labeled.
    assert main([*args[:args.index("0:3")], "0:4", *args[args.index("0:3") + 1:]]) == 0
    assert list(load_labelset(out)) == [0, 1, 2, 3]  # 3: dead here
    assert started(out) == {0: 1, 1: 1, 2: 1, 3: 1}


def started(out) -> dict[int, int]:
    """How often each feature of a run folder was started (the store's attempts column): a
    resumed run must not start a finished feature again."""
    from saelens_tokenlabel.run import RunStore

    with RunStore(out, create=False) as store:
        return {r["feature"]: r["starts"] for r in store.rows()}


def test_label_command_ray_flags(tmp_path, capsys):
    from saelens_tokenlabel.cli import build_parser
    from saelens_tokenlabel.cli.label import EvaluatorLoader, _ray_config

    base = ["label", "--corpus", "x.txt", "--evaluator", "toy", "--out", str(tmp_path)]
    parser = build_parser()
    assert _ray_config(parser.parse_args(base)) is None
    rc = _ray_config(parser.parse_args([*base, "--ray", "--ray-workers", "2"]))
    assert (rc.address, rc.num_workers, rc.num_gpus) == ("local", 2, None)
    assert isinstance(rc.evaluator_loader, EvaluatorLoader)
    assert rc.evaluator_loader.name == "toy"
    rc = _ray_config(parser.parse_args([*base, "--ray", "auto", "--ray-gpus-per-worker", "1"]))
    assert (rc.address, rc.num_gpus) == ("auto", 1.0)
    assert parser.parse_args(base).order == "index"
    assert parser.parse_args([*base, "--order", "attribution"]).order == "attribution"
    assert main([*base, "--sae-path", str(tmp_path), "--ray-workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err


def test_label_command_errors(tmp_path, capsys):
    assert main(["label", "--corpus", "x.txt", "--evaluator", "toy", "--out",
                 str(tmp_path)]) == 2
    assert "--sae-release" in capsys.readouterr().err
    assert main(["label", "--sae-path", str(tmp_path), "--corpus", "x.txt", "--evaluator",
                 "toy", "--out", str(tmp_path)]) == 2
    assert "cfg.json" in capsys.readouterr().err


def test_label_command_on_a_full_disk_is_one_clear_line(subject, fast_evaluator, toy_corpus,
                                                        tmp_path, capsys, monkeypatch):
    from saelens_tokenlabel.run import RunStore

    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:40]) + "\n")
    out = tmp_path / "out"
    real_put = RunStore.put

    def put(self, results):
        if self.finished():  # the disk is full from the second batch on: a real SQLITE_FULL
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count={pages}")
        return real_put(self, results)

    monkeypatch.setattr(RunStore, "put", put)
    args = label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0,1", *QUICK,
                      "--batch-size", "6", "--features-per-batch", "1", out=out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokenlabel: error: The disk holding the run store")
    assert "1 features finished before are saved" in err and "rerun the same command" in err
    assert "Traceback" not in err
    monkeypatch.setattr(RunStore, "put", real_put)
    assert main(args) == 0
    assert list(load_labelset(out)) == [0, 1]


def test_label_command_runs_subject_and_evaluator_as_bridges(subject, fast_evaluator,
                                                             toy_corpus, tmp_path, capsys):
    # Folders from save_local_model: loaded as HookedTransformers, written as Hugging Face
    # Llamas, booted as TransformerBridges.
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:30]) + "\n")
    out = tmp_path / "out"
    assert main(label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:3", *QUICK,
                           "--model-backend", "bridge", "--evaluator-backend", "bridge",
                           "--no-score", "coherence", "--no-score", "steering", out=out)) == 0
    labels = LabelSet.load(out / SIDECAR_FILENAME)
    assert [labels[f].status for f in labels] == ["ok", "ok", "dead"]
    assert all(labels[f].n_active > 0 for f in (0, 1))  # the bridge subject's activations
    with pytest.raises(SystemExit) as exit_:
        main(["label", "--evaluator-backend", "vllm"])
    assert exit_.value.code == 2 and "invalid choice: 'vllm'" in capsys.readouterr().err


def test_label_command_amortize_flags(subject, fast_evaluator, toy_corpus, tmp_path, capsys):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:30]) + "\n")
    out = tmp_path / "out"
    args = label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:6", *QUICK,
                      "--no-score", "coherence", "--no-score", "steering",
                      "--amortize-seed-features", "2", out=out)
    assert main(args) == 2
    assert "add --amortize" in capsys.readouterr().err
    assert main([*args, "--amortize", "--amortize-candidates", "2"]) == 0
    from saelens_tokenlabel.run import RunStore

    with RunStore(out, create=False) as store:
        bound = store.meta()["amortize"]
    assert bound["seed_features"] == 2 and bound["candidates"] == 2
    assert len(LabelSet.load(out / SIDECAR_FILENAME)) == 6


def test_a_run_without_a_neuronpedia_id_succeeds_and_still_saves_the_sae(
        subject, fast_evaluator, toy_corpus, tmp_path, capsys):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    planted_sae(neuronpedia_id=None).save_model(sae_dir)  # a user's own SAE: the usual case
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(toy_corpus[:40]) + "\n")
    out = tmp_path / "out"
    assert main(label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:2", *QUICK,
                           "--batch-size", "6", "--save-sae", out=out)) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    warning = [x for x in printed.out.splitlines() if x.startswith("neuronpedia:")]
    assert len(warning) == 1 and "not written: No Neuronpedia id" in warning[0]
    assert "--neuronpedia-id" in warning[0]
    assert not (out / "neuronpedia.jsonl").exists()
    labels = LabelSet.load(out / SIDECAR_FILENAME)
    assert list(labels) == [0, 1] and (out / "labels.tsv").is_file()
    saved = json.loads((out / "sae" / "cfg.json").read_text())  # --save-sae is not skipped
    assert saved["metadata"]["tokenlabel"]["labels"]["0"]["label"] == labels[0].label
    # The way the warning gives: the export with the id.
    assert main(["export", str(out), "--neuronpedia-id", NEURONPEDIA_ID]) == 0
    records = [json.loads(x) for x in (out / "neuronpedia.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == ["0", "1"]


def test_a_corpus_that_is_not_utf8_is_one_line_naming_the_file_and_line(
        subject, fast_evaluator, toy_corpus, tmp_path, capsys):
    sae_dir, model_dir, ev_dir = saved_inputs(tmp_path, subject, fast_evaluator)
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(("\n".join(toy_corpus[:4]) + "\nun caf\u00e9 noir\n").encode("latin-1"))
    out = tmp_path / "out"
    assert main(label_argv(tmp_path, (sae_dir, model_dir, ev_dir), corpus, "0:2", "--device",
                           "cpu", out=out)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"Corpus file {corpus}: line 5 is not UTF-8 (byte 0xe9 at offset 6 in the line)" \
        in err[0]
    assert "iconv" in err[0]
