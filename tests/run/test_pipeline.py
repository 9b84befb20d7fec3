"""`sae.label_features` end to end: planted concepts recovered by the toy evaluator; Chinese
through a byte-level tokenizer reaches the evaluator as whole characters; statuses instead of
crashes; checkpoints; progress."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import saelens_tokenlabel.run.pipeline as label_mod
from saelens_tokenlabel import LabelConfig, LabelSet
from saelens_tokenlabel.descent.batch import label_batch
from saelens_tokenlabel.records.config import PerformanceConfig
from saelens_tokenlabel.run.executors import LocalExecutor
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.sae.words import REPLACEMENT
from saelens_tokenlabel.toy.lexicon import ANIMALS, DIGITS

from ..sae.planted import (
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


def recording(labeled: list) -> LocalExecutor:
    """A local executor that records the features it labels (in order)."""

    def label(batch, evaluator, config):
        labeled.extend(batch.to_label)
        return label_batch(batch, evaluator, config)

    return LocalExecutor(label=label)


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
        words = {w.word: w for w in labels[f].extra.words}
        assert all(w.text.strip() == w.word for w in words.values())
    for f in (ANIMAL_FEATURE, DIGIT_FEATURE):
        assert labels[f].converged and labels[f].probability >= 0.9
    for f, members in ((ANIMAL_FEATURE, ANIMALS), (DIGIT_FEATURE, DIGITS)):
        examples = labels[f].extra.examples
        assert {e.word for e in examples if e.activation > 0} <= set(members)
        assert not {e.word for e in examples if e.activation == 0} & set(members)


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
    active = {e.word for e in r.extra.examples if e.activation > 0}
    assert active == set(CHINESE_ACTIVE)
    chinese_words = {w for _, w in seen if "\u4e00" <= w[0] <= "\u9fff"}
    assert chinese_words and all(len(w) == 1 for w in chinese_words)  # whole characters
    assert any(any(ch in t for ch in "我他今她") for t, _ in seen)  # Chinese contexts too
    # The mapping records each merge: three byte tokens -> one character.
    merged = [w for w in r.extra.words if w.word in CHINESE_ACTIVE]
    assert merged and all(w.merged and len(w.subject_ids) == 3 for w in merged)
    assert r.extra.merged_words >= len(merged)


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
    assert "every example" in labels[4].extra.message
    assert labels[ANIMAL_FEATURE].status == "ok"
    err = capsys.readouterr().err
    assert "labels" in err and f"{sae.cfg.d_sae}/{sae.cfg.d_sae}" in err and "feature" in err
    last = sae.cfg.d_sae - 1  # the postfix names the last feature done and its label
    assert f"{last}: {labels[last].label!r}" in err


def test_checkpoint_resumes_and_checks_settings(subject, sae, toy_corpus, fast_evaluator,
                                                tmp_path):
    ckpt = tmp_path / "labels.json"
    kw = dict(config=QUICK, cache=CacheConfig(cache_dir=tmp_path / "c"), examples=FEW,
              checkpoint=ckpt)
    first = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1], **kw)
    assert LabelSet.load(ckpt).to_dict()["results"] == first.to_dict()["results"]
    labeled = []
    more = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 5], **kw,
                              executor=recording(labeled))
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
                                             tmp_path):
    calls = []

    def flaky(batch, evaluator, config):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return label_batch(batch, evaluator, config)

    with pytest.raises(RuntimeError) as err:
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1], QUICK,
                           cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                           features_per_batch=1, executor=LocalExecutor(label=flaky))
    assert "1 features were labeled" in str(err.value.__notes__)
    assert "run_dir=" in str(err.value.__notes__)


def test_a_features_selection_is_released_once_its_label_is_kept(
        subject, sae, toy_corpus, fast_evaluator, tmp_path, monkeypatch):
    """A run holds the selected examples of the features still to label only: a feature's go
    when its result is kept, so a whole SAE's do not all stay until its last feature."""
    held = {}
    select = label_mod.select_examples

    def selecting(*args, **kwargs):
        held["sels"], pool = select(*args, **kwargs)
        return held["sels"], pool

    monkeypatch.setattr(label_mod, "select_examples", selecting)
    seen = []

    def label(batch, evaluator, config):
        seen.append((list(batch.to_label), set(held["sels"])))
        return label_batch(batch, evaluator, config)

    feats = [ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE, 5]
    labels = label_sae_features(sae, subject, fast_evaluator, toy_corpus, feats, QUICK,
                                cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                                features_per_batch=1, executor=LocalExecutor(label=label))
    assert [f for f, _ in seen] == [[ANIMAL_FEATURE], [DIGIT_FEATURE], [5]]
    assert seen[0][1] == set(feats)  # nothing kept yet
    # In index order: ANIMAL_FEATURE's kept after its batch; the dead feature's kept, without
    # a batch, after DIGIT_FEATURE's.
    assert (ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE) == (0, 1, 2)
    assert seen[1][1] == {DIGIT_FEATURE, DEAD_FEATURE, 5} and seen[2][1] == {5}
    assert held["sels"] == {} and list(labels) == feats


def test_bad_inputs_are_clear_errors(subject, sae, toy_corpus, fast_evaluator):
    with pytest.raises(ValueError, match="out of range"):
        sae.label_features(subject, fast_evaluator, toy_corpus, features=[99])
    with pytest.raises(TypeError, match="stl.Evaluator"):
        sae.label_features(subject, "gpt-4", toy_corpus, features=[0])
    with pytest.raises(TypeError, match="subject HookedTransformer"):
        sae.label_features(None, fast_evaluator, toy_corpus, features=[0])
    with pytest.raises(TypeError, match="feature indices"):
        sae.label_features(subject, fast_evaluator, toy_corpus, features=["a"])


def test_duplicated_features_are_labeled_once_and_logged(subject, sae, toy_corpus,
                                                         fast_evaluator, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="saelens_tokenlabel.records.features"):
        labels = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [5, 1, 5, 1, 0],
                                    QUICK, cache=CacheConfig(cache_dir=tmp_path),
                                    examples=FEW)
    assert list(labels) == [0, 1, 5]
    assert "[1, 5] are listed more than once" in caplog.text
    for bad in ([8], [-1], [0, 8]):
        with pytest.raises(ValueError, match=r"out of range: this SAE has d_sae=8 "
                                             r"features \(0\.\.7\)"):
            label_sae_features(sae, subject, fast_evaluator, toy_corpus, bad, QUICK)
    with pytest.raises(ValueError, match="features is empty"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [], QUICK)


def test_order_by_scores():
    scores = torch.tensor([0.1, 0.5, 0.0, 0.5, 2.0, float("nan"), 0.3, 0.0])
    assert label_mod.order_by_scores(range(8), scores) == [4, 1, 3, 6, 0, 2, 7, 5]
    assert label_mod.order_by_scores([7, 0, 5], scores) == [0, 7, 5]
    with pytest.raises(ValueError, match="cover 3 features"):
        label_mod.order_by_scores([0, 5], [1.0, 2.0, 3.0])


def test_attribution_order_labels_the_highest_scores_first(subject, sae, toy_corpus,
                                                           fast_evaluator, tmp_path,
                                                           monkeypatch):
    import sys
    import types

    asked = []

    def attribution_scores(subject_, corpus, cache_config=None, max_tokens=None):
        asked.append((subject_.model, subject_.sae, len(corpus.fingerprint()) > 0,
                      cache_config, max_tokens))
        return torch.tensor([0.1, 0.9, 0.0, 0.0, 0.2, 0.9, 0.0, 5.0])

    fake = types.ModuleType("saelens_tokenlabel.sae.attribution")
    fake.attribution_scores = attribution_scores
    monkeypatch.setitem(sys.modules, "saelens_tokenlabel.sae.attribution", fake)
    labeled = []
    cache = CacheConfig(cache_dir=tmp_path, max_tokens=500)
    labels = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5, 7],
                                QUICK, cache=cache, examples=FEW, order="attribution",
                                features_per_batch=2, executor=recording(labeled))
    assert labeled == [7, 1, 5, 4, 0]  # by score; 1 and 5 tie at 0.9: by index
    assert list(labels) == [0, 1, 4, 5, 7]
    assert asked == [(subject, sae, True, cache, 500)]
    with pytest.raises(ValueError, match="order must be one of"):
        label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0], QUICK,
                           order="random")


def test_the_attribution_pass_runs_once_per_run_when_amortised_seeds_follow_it(
        subject, sae, toy_corpus, fast_evaluator, tmp_path, monkeypatch):
    """``--order attribution --amortize --amortize-seed-order order`` orders the features to
    label and the seed set: one attribution pass (a forward and backward pass over the
    corpus) serves both."""
    import sys
    import types

    from saelens_tokenlabel import AmortizeConfig

    passes = []

    def attribution_scores(subject_, corpus, cache_config=None, max_tokens=None):
        passes.append(corpus.describe())
        return torch.tensor([0.1, 0.9, 0.0, 0.0, 0.2, 0.9, 0.0, 5.0])

    fake = types.ModuleType("saelens_tokenlabel.sae.attribution")
    fake.attribution_scores = attribution_scores
    monkeypatch.setitem(sys.modules, "saelens_tokenlabel.sae.attribution", fake)
    labeled = []
    label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1, 4, 5, 7], QUICK,
                       cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                       order="attribution", run_dir=tmp_path / "run",
                       amortize=AmortizeConfig(seed_features=2, seed_order="order"),
                       executor=recording(labeled))
    assert len(passes) == 1
    assert labeled[:2] == [7, 1]  # the seed set: the first two in attribution order


def test_out_of_memory_once_halves_and_gives_the_same_labels(subject, sae, toy_corpus,
                                                             fast_evaluator, tmp_path, caplog):
    """End to end, a step that runs out of memory once is redone in passes of half the rows
    and the run carries on. The OOM comes from the evaluator's model itself (a torch forward
    pre-hook on its first gradient-carrying forward of several rows: a step's pass; the prefix
    pass and the scoring run without gradients), not from patching a function.

    Two half passes accumulate the same gradient as one pass up to float rounding (float32
    here), so what must agree is what rounding cannot change: the labels and their token ids
    and the steps exactly; the label probabilities and every step's loss terms to 1e-6. Not
    the order of the recorded top-k tokens: near-equal probabilities may swap places."""
    # The OOM is raised by the evaluator model's forward, which only TransformerLens's path
    # calls: the lean suffix forward has no module to hook. Its OOM handling is the same code
    # (`step_halving_on_oom`), tested through the pass seam in tests/optimize/test_attempts.py.
    config = dataclasses.replace(QUICK, performance=PerformanceConfig(fast_suffix=False))
    kw = dict(config=config, cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
              features_per_batch=2)
    ref = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1], **kw)
    raised = []

    def oom_once(module, args):
        if not raised and torch.is_grad_enabled() and args[0].shape[0] > 1:
            raised.append(args[0].shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = fast_evaluator.model.register_forward_pre_hook(oom_once)
    try:
        with caplog.at_level("WARNING", logger="saelens_tokenlabel.descent"):
            got = label_sae_features(sae, subject, fast_evaluator, toy_corpus, [0, 1],
                                     run_dir=tmp_path / "run", **kw)
    finally:
        handle.remove()
    assert raised == [12] and f"halving to {12 // 2} rows" in caplog.text  # 2 features x 6
    close = dict(rtol=0.0, atol=1e-6)
    for f in (0, 1):
        assert got[f].status == "ok"
        assert (got[f].label, got[f].label_token_ids, got[f].steps) == \
            (ref[f].label, ref[f].label_token_ids, ref[f].steps)
        torch.testing.assert_close(got[f].probability, ref[f].probability, **close)
        for name in ("loss", "accuracy", "entropy", "kl"):
            torch.testing.assert_close(torch.tensor(getattr(got[f].trajectory, name)),
                                       torch.tensor(getattr(ref[f].trajectory, name)), **close)


def test_warm_start_and_sae_scores_reach_the_results(subject, sae, toy_corpus, toy_evaluator,
                                                     tmp_path):
    from saelens_tokenlabel.sae.logit_lens import warm_start_logits
    from saelens_tokenlabel.sae.scorers.apply import ScoreConfig

    # The animal feature's decoder row promotes the subject's " cat": the warm start must
    # put the evaluator's "cat"-like tokens on top at step 0 of the first attempt.
    cat = subject.tokenizer(" cat", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        sae.W_dec[ANIMAL_FEATURE] = 5 * subject.W_U[:, cat] / subject.W_U[:, cat].norm()
    config = LabelConfig(steps=3, batch_size=6, threshold=0.0, warm_start=True, restarts=())
    labels = label_sae_features(sae, subject, toy_evaluator, toy_corpus, [ANIMAL_FEATURE],
                                config, cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                                scores=ScoreConfig())
    r = labels[ANIMAL_FEATURE]
    init = warm_start_logits(Subject.of(subject, sae), toy_evaluator, [ANIMAL_FEATURE],
                             config.warm_start_options)[0]
    best = torch.nonzero(init == init.max()).flatten().tolist()  # " cat" and "cat" tie
    assert {toy_evaluator.token_str(i).strip() for i in best} == {"cat"}
    assert set(r.trajectory.top_ids[0][0][: len(best)]) == set(best)
    # The SAE-side scores are in the result: the output side and reflective coherence.
    promoted = [t for t, _ in r.extra.output_side.promoted]
    assert promoted[0] == " cat"
    assert {"coherence_ratio", "coherence_hit_rate"} <= set(r.metrics)
    cold = label_sae_features(sae, subject, toy_evaluator, toy_corpus, [ANIMAL_FEATURE],
                              LabelConfig(steps=3, batch_size=6, threshold=0.0, restarts=()),
                              cache=CacheConfig(cache_dir=tmp_path), examples=FEW,
                              scores=ScoreConfig(scorers=("steering",)))
    c = cold[ANIMAL_FEATURE]
    assert not set(c.trajectory.top_ids[0][0][: len(best)]) & set(best)
    assert c.extra.output_side is None and "coherence_ratio" not in c.metrics
