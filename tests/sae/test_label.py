"""`sae.label_features` end to end: planted concepts recovered by the toy evaluator; Chinese
through a byte-level tokenizer reaches the evaluator as whole characters; statuses instead of
crashes; checkpoints; progress."""

from __future__ import annotations

import pytest
import torch

import saelens_tokenlabel.sae.label as label_mod
from saelens_tokenlabel import LabelConfig, LabelSet
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, label_sae_features
from saelens_tokenlabel.sae.words import REPLACEMENT
from saelens_tokenlabel.toy.lexicon import ANIMALS, DIGITS

from .planted import (
    ANIMAL_FEATURE,
    CHINESE_ACTIVE,
    CHINESE_FEATURE,
    CHINESE_SENTENCES,
    DEAD_FEATURE,
    DIGIT_FEATURE,
    planted_sae,
)

FEW = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4)
QUICK = LabelConfig(steps=2, batch_size=6)


def test_planted_concepts_are_recovered_by_the_toy_evaluator(subject, sae, toy_corpus,
                                                             toy_evaluator, tmp_path):
    # Planted activations are graded (1.5 to 3.0): every firing token is an instance, so the
    # threshold is "fires at all". A high lr with the default weights converges in ~40 steps.
    config = LabelConfig(lr=1.0, steps=80, batch_size=16, threshold=0.0)
    labels = sae.label_features(
        subject, toy_evaluator, toy_corpus,
        features=[ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE], config=config,
        cache=CacheConfig(cache_dir=tmp_path),
        examples=ExampleConfig(n_top=12, n_quantile=12, n_random=16, n_near_miss=12),
    )
    assert labels[ANIMAL_FEATURE].label == "animal"
    assert labels[DIGIT_FEATURE].label == "number"
    assert labels[DEAD_FEATURE].status == "dead"
    for f in (ANIMAL_FEATURE, DIGIT_FEATURE):
        assert labels[f].status == "ok"
        assert labels[f].metrics["heldout_balanced_accuracy"] >= 0.9
        # The words the evaluator saw are the subject tokens without their leading space.
        words = {w["word"]: w for w in labels[f].extra["words"]}
        assert all(w["text"].strip() == w["word"] for w in words.values())
    for f in (ANIMAL_FEATURE, DIGIT_FEATURE):
        assert labels[f].converged and labels[f].probability >= 0.9
    for f, members in ((ANIMAL_FEATURE, ANIMALS), (DIGIT_FEATURE, DIGITS)):
        examples = labels[f].extra["examples"]
        assert {e["word"] for e in examples if e["activation"] > 0} <= set(members)
        assert not {e["word"] for e in examples if e["activation"] == 0} & set(members)


def test_chinese_reaches_the_evaluator_as_whole_characters(subject, sae, toy_corpus,
                                                           fast_evaluator, tmp_path,
                                                           monkeypatch):
    seen = []
    encode = fast_evaluator.encode
    monkeypatch.setattr(fast_evaluator, "encode",
                        lambda text, word: seen.append((text, word)) or encode(text, word))
    corpus = toy_corpus[:30] + list(CHINESE_SENTENCES) * 2
    labels = sae.label_features(subject, fast_evaluator, corpus, features=[CHINESE_FEATURE],
                                config=QUICK, cache=CacheConfig(cache_dir=tmp_path),
                                examples=ExampleConfig(n_top=6, n_quantile=6, n_random=6,
                                                       n_near_miss=6, window_before=6,
                                                       window_after=6))
    r = labels[CHINESE_FEATURE]
    assert r.status == "ok" and seen
    for text, word in seen:
        assert REPLACEMENT not in text and REPLACEMENT not in word
        assert word in text
    active = {e["word"] for e in r.extra["examples"] if e["activation"] > 0}
    assert active == set(CHINESE_ACTIVE)
    chinese_words = {w for _, w in seen if "\u4e00" <= w[0] <= "\u9fff"}
    assert chinese_words and all(len(w) == 1 for w in chinese_words)  # whole characters
    assert any(any(ch in t for ch in "我他今她") for t, _ in seen)  # Chinese contexts too
    # The mapping records each merge: three byte tokens -> one character.
    merged = [w for w in r.extra["words"] if w["word"] in CHINESE_ACTIVE]
    assert merged and all(w["merged"] and len(w["subject_ids"]) == 3 for w in merged)
    assert r.extra["merged_words"] >= len(merged)


def test_all_features_statuses_and_progress(subject, toy_corpus, fast_evaluator, tmp_path,
                                            capsys):
    sae = planted_sae()
    with torch.no_grad():
        sae.b_enc[4] = 50.0  # fires on every token: nothing to tell apart
    labels = sae.label_features(subject, fast_evaluator, toy_corpus[:40], features=None,
                                config=QUICK, cache=CacheConfig(cache_dir=tmp_path),
                                examples=FEW, progress=True)
    assert list(labels) == list(range(sae.cfg.d_sae))
    assert labels[DEAD_FEATURE].status == "dead"
    assert labels[CHINESE_FEATURE].status == "dead"  # no Chinese in this corpus
    assert labels[4].status == "unlabelable"
    assert "every example" in labels[4].extra["message"]
    assert labels[ANIMAL_FEATURE].status == "ok"
    err = capsys.readouterr().err
    assert "labels" in err and f"{sae.cfg.d_sae}/{sae.cfg.d_sae}" in err and "feature" in err


def test_checkpoint_resumes_and_checks_settings(subject, sae, toy_corpus, fast_evaluator,
                                                tmp_path, monkeypatch):
    ckpt = tmp_path / "labels.json"
    kw = dict(config=QUICK, cache=CacheConfig(cache_dir=tmp_path / "c"), examples=FEW,
              checkpoint=ckpt)
    first = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1], **kw)
    assert LabelSet.load(ckpt).to_dict()["results"] == first.to_dict()["results"]
    labeled = []
    real = label_mod.label_features_data
    monkeypatch.setattr(label_mod, "label_features_data",
                        lambda datas, *a: labeled.extend(d.name for d in datas) or
                        real(datas, *a))
    more = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 5], **kw)
    assert labeled == [5]  # 0 and 1 came from the checkpoint
    assert list(more) == [0, 1, 5] and more[0].to_dict() == first[0].to_dict()
    assert list(label_sae_features(sae, subject, fast_evaluator, toy_corpus, [1], **kw)) == [1]
    with pytest.raises(ValueError, match="another label config"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0],
                           **{**kw, "config": LabelConfig(steps=3, batch_size=6)})
    with pytest.raises(ValueError, match="another SAE, model, evaluator or corpus"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus[:-1], [0], **kw)
    with pytest.raises(ValueError, match="another SAE"):
        label_sae_features(planted_sae(hook="blocks.1.hook_resid_pre"), subject,
                           fast_evaluator, toy_corpus, [0], **kw)


def test_an_error_mid_run_says_what_was_done(subject, sae, toy_corpus, fast_evaluator,
                                             tmp_path, monkeypatch):
    real = label_mod.label_features_data
    calls = []

    def flaky(datas, *a):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(datas, *a)

    monkeypatch.setattr(label_mod, "label_features_data", flaky)
    with pytest.raises(RuntimeError) as err:
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1], QUICK,
                           cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                           features_per_batch=1)
    assert "1 features were labeled" in str(err.value.__notes__)
    assert "checkpoint=" in str(err.value.__notes__)


def test_bad_inputs_are_clear_errors(subject, sae, toy_corpus, fast_evaluator):
    with pytest.raises(ValueError, match="out of range"):
        sae.label_features(subject, fast_evaluator, toy_corpus, features=[99])
    with pytest.raises(TypeError, match="stl.Evaluator"):
        sae.label_features(subject, "gpt-4", toy_corpus, features=[0])
    with pytest.raises(TypeError, match="subject HookedTransformer"):
        sae.label_features(None, fast_evaluator, toy_corpus, features=[0])
    with pytest.raises(TypeError, match="feature indices"):
        sae.label_features(subject, fast_evaluator, toy_corpus, features=["a"])
