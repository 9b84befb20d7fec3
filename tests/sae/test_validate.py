"""Bad inputs to `label_sae_features`: each is a clear error before any expensive work, or a
recorded per-feature status, never a deep torch traceback or silently lost results.

Empty corpus, a corpus shorter than the context, a hook the model lacks, a wrong `d_in`, an
evaluator without (or with an unusable) chat template, an evaluator that cannot spell a word,
NaN/inf activations from the model or the SAE, and a dead feature."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saelens_tokenlabel import Evaluator, EvaluatorError, LabelConfig, PromptTemplate
from saelens_tokenlabel.evaluator.model import PLAIN_CHAT_TEMPLATE
from saelens_tokenlabel.run.pipeline import label_sae_features
from saelens_tokenlabel.sae import (
    CacheConfig,
    CorpusError,
    ExampleConfig,
    HookError,
    WordDecoder,
    build_activation_cache,
    select_examples,
)
from saelens_tokenlabel.sae.activations import (
    NonFiniteActivationError,
    SaeEncoder,
    encode_contexts,
)
from saelens_tokenlabel.sae.cache import META_FILENAME
from saelens_tokenlabel.sae.hooks import HookSpec, similar_hooks
from saelens_tokenlabel.sae.render import contexts_needed, render_feature
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.sae.validate import validate_inputs

from ..builders import CORPUS, LLAMA3_LIKE_TEMPLATE, SPECIAL, tiny_llama, train_tokenizer
from .planted import (
    ANIMAL_FEATURE,
    CHINESE_ACTIVE,
    CHINESE_FEATURE,
    CHINESE_SENTENCES,
    DEAD_FEATURE,
    expected_activations,
    planted_sae,
    subject_model,
)

FEW = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4)
QUICK = LabelConfig(steps=2, batch_size=6)


def _label(sae, subject, evaluator, corpus, features, tmp_path, **kw):
    return label_sae_features(sae, subject, evaluator, corpus, features, QUICK,
                              cache=CacheConfig(cache_dir=tmp_path / "acts"), examples=FEW, **kw)


def _no_cache_written(tmp_path) -> bool:
    return not (tmp_path / "acts").exists() or not list((tmp_path / "acts").rglob("*"))


# ---------------------------------------------------------------------- corpus
def test_empty_corpus_is_a_clear_error(subject, sae, fast_evaluator, tmp_path):
    for corpus in ([], ["", ""]):
        with pytest.raises(CorpusError, match="(empty|no tokens)"):
            _label(sae, subject, fast_evaluator, corpus, [0], tmp_path)
    # Streamed sources are only known empty once read: the cache build says so, and leaves
    # nothing behind.
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no documents"):
        build_activation_cache(Subject.of(subject, sae), blank, [0],
                               CacheConfig(cache_dir=tmp_path / "a"))
    jsonl = tmp_path / "empty.jsonl"
    jsonl.write_text('{"text": ""}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="all 2 documents are empty"):
        build_activation_cache(Subject.of(subject, sae), jsonl, [0],
                               CacheConfig(cache_dir=tmp_path / "a"))
    assert not list((tmp_path / "a").rglob(META_FILENAME))


def test_corpus_shorter_than_the_context_gives_short_contexts(subject, sae, subject_tokenizer,
                                                              fast_evaluator, tmp_path):
    """Decided: a document shorter than the context is one shorter context (BOS + its
    tokens), never padded or packed with other documents; activations are exact."""
    docs = ["The cat sat.", "A dog ate 3 cake."]
    cache = build_activation_cache(Subject.of(subject, sae), docs, [ANIMAL_FEATURE],
                                   CacheConfig(cache_dir=tmp_path / "acts"))
    assert cache.meta["context_size"] == 32
    bos = subject_tokenizer.bos_token_id
    contexts = cache.contexts(range(cache.n_contexts))
    assert contexts == {i: [bos] + subject_tokenizer(d, add_special_tokens=False)["input_ids"]
                        for i, d in enumerate(docs)}
    assert cache.n_tokens == sum(len(c) for c in contexts.values()) < 32
    got = {}
    for c, p, v in zip(*(t.tolist() for t in cache.feature_activations(ANIMAL_FEATURE)),
                       strict=True):
        got[(c, p, ANIMAL_FEATURE)] = v
    want = expected_activations(subject, sae, contexts, [ANIMAL_FEATURE])
    assert got.keys() == want.keys() and len(want) == 2  # cat, dog
    # ... and labeling from so little text runs to a result with a status, not a crash.
    labels = _label(sae, subject, fast_evaluator, docs, [ANIMAL_FEATURE, DEAD_FEATURE],
                    tmp_path)
    assert labels[ANIMAL_FEATURE].status == "ok"
    assert labels[DEAD_FEATURE].status == "dead"


# ---------------------------------------------------------------------- hook, d_in
def test_missing_hook_names_similar_hooks_before_any_work(subject, fast_evaluator, toy_corpus,
                                                          tmp_path):
    with pytest.raises(HookError) as err:
        _label(planted_sae(hook="blocks.7.hook_resid_pre"), subject, fast_evaluator,
               toy_corpus, [0], tmp_path)
    msg = str(err.value)
    assert "'blocks.7.hook_resid_pre'" in msg and "n_layers=2" in msg
    assert "blocks.0.hook_resid_pre" in msg and "blocks.1.hook_resid_pre" in msg
    assert _no_cache_written(tmp_path)
    with pytest.raises(HookError, match=r"Similar hooks it has: blocks\.0\.hook_resid_pre"):
        validate_inputs(planted_sae(hook="blocks.0.hook_resid_pr"), subject, fast_evaluator)
    assert similar_hooks("blocks.1.attn.hook_zz", subject.hook_dict)[0] == "blocks.1.attn.hook_z"


def test_d_in_mismatch_and_bad_head_are_clear_errors(subject, fast_evaluator, toy_corpus,
                                                     tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    with pytest.raises(HookError, match="gives 64 values per token but the SAE's d_in is 32") \
            as err:
        _label(planted_sae(hook="blocks.0.mlp.hook_post"), subject, fast_evaluator,
               toy_corpus, [0], tmp_path)
    # The note lists hooks of that layer that do have d_in values per token.
    notes = " ".join(getattr(err.value, "__notes__", []))
    assert "blocks.0.hook_resid_pre" in notes and "blocks.0.hook_resid_post" in notes
    assert "blocks.0.mlp.hook_post" not in notes
    assert _no_cache_written(tmp_path)

    def head_sae(head: int, d_in: int):
        return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=4, metadata=SAEMetadata(
            hook_name="blocks.1.attn.hook_z", hook_head_index=head, model_name="tiny-subject")))

    with pytest.raises(HookError, match="has 4 heads"):
        validate_inputs(head_sae(9, subject.cfg.d_head), subject, fast_evaluator)
    with pytest.raises(HookError, match="d_in"):
        validate_inputs(head_sae(1, 2 * subject.cfg.d_head), subject, fast_evaluator)
    validate_inputs(head_sae(1, subject.cfg.d_head), subject, fast_evaluator)  # fits


def test_wrong_types_are_clear_errors(subject, sae, fast_evaluator):
    with pytest.raises(TypeError, match="sae_lens SAE"):
        validate_inputs(object(), subject, fast_evaluator)
    with pytest.raises(TypeError, match="subject HookedTransformer"):
        validate_inputs(sae, "gpt2", fast_evaluator)
    with pytest.raises(TypeError, match="stl.Evaluator"):
        validate_inputs(sae, subject, "gpt-4")
    assert validate_inputs(sae, subject, fast_evaluator)[1] is fast_evaluator


# ---------------------------------------------------------------------- evaluator
def test_evaluator_without_chat_template_names_the_fix(subject, sae, toy_corpus, tmp_path):
    tok = train_tokenizer(tmp_path / "tok", chat_template=None)
    model = tiny_llama(tok, dtype=torch.float32)
    with pytest.raises(EvaluatorError, match="no chat template") as err:
        _label(sae, subject, model, toy_corpus, [0], tmp_path)
    assert "chat_template=" in str(err.value) and "PromptTemplate" in str(err.value)
    assert _no_cache_written(tmp_path)
    # The fix the message names works: a plain template for a base model.
    ev = Evaluator(model, chat_template=PLAIN_CHAT_TEMPLATE)
    text = ev.render("The cat sat.", "cat", "animal")
    assert text.startswith(tok.bos_token + "System: ") and text.endswith("Assistant: Rating:")
    assert ev.yes_id != ev.no_id


def test_chat_template_that_cannot_render_the_prompt(tmp_path):
    no_system = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
        "{% if not loop.last %}<|eot_id|>{% endif %}{% endfor %}"
    )
    tok = train_tokenizer(tmp_path / "tok", chat_template=no_system)
    model = tiny_llama(tok, dtype=torch.float32)
    with pytest.raises(EvaluatorError, match="System role not supported") as err:
        Evaluator(model)
    assert "PromptTemplate(system='')" in str(err.value)
    ev = Evaluator(model, template=PromptTemplate(system=""))
    assert "System" not in ev.render("x", "y", "z")


def small_alphabet_tokenizer(directory):
    """A BPE over the characters of an English corpus only, with [UNK] for anything else and
    no byte fallback (unlike the GPT-2 / Llama-3 style byte-level BPEs)."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", *SPECIAL],
                                  show_progress=False)
    english = [t for t in CORPUS if t.isascii()]
    tok.train_from_iterator(english * 10 + ["The dog ate 3 cake. The bird sat."], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[0],
                                   eos_token=SPECIAL[1], pad_token=SPECIAL[1], unk_token="[UNK]")
    fast.chat_template = LLAMA3_LIKE_TEMPLATE
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="module")
def unk_evaluator(tmp_path_factory):
    tok = small_alphabet_tokenizer(tmp_path_factory.mktemp("unk_tok"))
    return Evaluator(tiny_llama(tok, dtype=torch.float32),
                     template=PromptTemplate(system="Rate the word."), name="unk-evaluator")


def test_evaluator_knows_which_words_it_cannot_spell(unk_evaluator, fast_evaluator):
    assert unk_evaluator.tokenizer("猫", add_special_tokens=False)["input_ids"] == [
        unk_evaluator.tokenizer.unk_token_id]
    assert unk_evaluator.can_spell("cat") and unk_evaluator.can_spell("The dog")
    assert not unk_evaluator.can_spell("猫")
    assert "unknown token '[UNK]'" in unk_evaluator.spelling_problem("猫")
    assert not unk_evaluator.can_spell("cat猫")  # one lost character is enough
    # A byte-level evaluator spells everything; whitespace differences are no problem.
    assert all(fast_evaluator.can_spell(w) for w in ("猫", "cat猫", " cat ", "他一到，"))


def test_unspellable_words_are_dropped_and_counted(subject, sae, subject_tokenizer,
                                                   unk_evaluator, toy_corpus, tmp_path):
    corpus = toy_corpus[:20] + list(CHINESE_SENTENCES) * 2
    cache = build_activation_cache(Subject.of(subject, sae), corpus, [ANIMAL_FEATURE,
                                                                      CHINESE_FEATURE],
                                   CacheConfig(cache_dir=tmp_path / "acts"))
    sels, pool = select_examples(cache, [ANIMAL_FEATURE, CHINESE_FEATURE], FEW)
    decoder = WordDecoder(subject_tokenizer)
    out = {}
    for f in (ANIMAL_FEATURE, CHINESE_FEATURE):
        contexts = cache.contexts(sorted(contexts_needed(sels[f], pool)))
        out[f] = render_feature(sels[f], pool, contexts, decoder, FEW, cache.special_ids,
                                unk_evaluator.placeholder, spellable=unk_evaluator.can_spell)
    chinese = out[CHINESE_FEATURE]
    # Every active pick is a Chinese character the evaluator cannot see: all dropped, counted.
    assert chinese.n_active == 0 and chinese.dropped["unspellable_word"] >= 2
    assert set(chinese.unspellable) >= set(CHINESE_ACTIVE)
    assert "cannot spell" in chinese.drop_note() and "'猫'" in chinese.drop_note()
    assert all(unk_evaluator.can_spell(w) for _, w, _ in chinese.examples)
    # English words pass untouched (only the Chinese random/near-miss picks go).
    animal = out[ANIMAL_FEATURE]
    assert animal.n_active > 0 and all(not w.isascii() for w in animal.unspellable)
    assert all(w.isascii() for _, w, _ in animal.examples)


def test_unspellable_feature_gets_a_status_end_to_end(subject, sae, unk_evaluator, toy_corpus,
                                                      tmp_path):
    corpus = toy_corpus[:20] + list(CHINESE_SENTENCES) * 2
    labels = _label(sae, subject, unk_evaluator, corpus, [ANIMAL_FEATURE, CHINESE_FEATURE],
                    tmp_path)
    assert labels[ANIMAL_FEATURE].status == "ok"
    r = labels[CHINESE_FEATURE]
    assert r.status == "unlabelable" and "cannot spell" in r.extra.message
    assert r.extra.dropped["unspellable_word"] >= 2


# ---------------------------------------------------------------------- NaN / inf
def _broken_sae():
    """Planted SAE whose feature 5 is NaN and feature 6 +inf on every token."""
    sae = planted_sae()
    with torch.no_grad():
        sae.b_enc[5] = float("nan")
        sae.b_enc[6] = float("inf")
    return sae


def test_nonfinite_sae_activations_are_counted_not_cached(subject, toy_corpus, tmp_path):
    sae = _broken_sae()
    feats = [ANIMAL_FEATURE, DEAD_FEATURE, 5, 6]
    cache = build_activation_cache(Subject.of(subject, sae), toy_corpus[:30], feats,
                                   CacheConfig(cache_dir=tmp_path / "acts"))
    assert cache.meta["nonfinite"] == {"5": cache.n_tokens, "6": cache.n_tokens}
    for f in feats:
        _, _, vals = cache.feature_activations(f)
        assert torch.isfinite(vals).all()
        if f in (5, 6):
            assert len(vals) == 0
    # The healthy feature is exactly what it is without the broken ones.
    contexts = cache.contexts(range(cache.n_contexts))
    want = expected_activations(subject, planted_sae(), contexts, [ANIMAL_FEATURE])
    ctx, pos, val = cache.feature_activations(ANIMAL_FEATURE)
    assert {(c, p, ANIMAL_FEATURE) for c, p in zip(ctx.tolist(), pos.tolist(),
                                                   strict=True)} == want.keys()
    sels, pool = select_examples(cache, feats, FEW)
    assert sels[5].status(pool.n_tokens)[0] == "nonfinite"
    assert "NaN/inf" in sels[6].status(pool.n_tokens)[1] and not sels[6].dead
    assert sels[DEAD_FEATURE].status(pool.n_tokens)[0] == "dead"
    assert sels[ANIMAL_FEATURE].status(pool.n_tokens) is None
    # Without a counter to record them in, NaN/inf are an error, never zeros.
    spec = HookSpec.from_sae(sae)
    with pytest.raises(NonFiniteActivationError, match=r"features \[5, 6\]"):
        encode_contexts(SaeEncoder(Subject(subject, sae, spec), None, 64), [contexts[0]], 32)


def test_nonfinite_values_already_in_a_cache_are_counted_too(tmp_path):
    """A cache written before non-finite values were kept out (or by other code) may hold
    them: example selection counts them instead of reading NaN as "not active"."""
    from .test_examples import make_cache

    contexts = [[0, 5, 6, 7, 8]] * 3
    entries = {(0, 1, 0): 1.0, (1, 2, 0): float("nan"), (2, 3, 0): 2.0, (2, 4, 0): float("inf"),
               (0, 2, 1): 1.5}
    cache = make_cache(tmp_path / "c", contexts, entries)
    sels, pool = select_examples(cache, [0, 1], FEW)
    assert sels[0].n_nonfinite == 2 and sels[0].status(pool.n_tokens)[0] == "nonfinite"
    assert [v for _, _, v in sels[0].top] == [2.0, 1.0]  # only the finite ones
    assert sels[1].n_nonfinite == 0 and sels[1].status(pool.n_tokens) is None


def test_nonfinite_features_get_a_status_and_the_rest_are_labeled(subject, toy_corpus,
                                                                  fast_evaluator, tmp_path):
    labels = _label(_broken_sae(), subject, fast_evaluator, toy_corpus[:30],
                    [ANIMAL_FEATURE, DEAD_FEATURE, 5, 6], tmp_path)
    assert labels[ANIMAL_FEATURE].status == "ok" and labels[ANIMAL_FEATURE].label
    assert labels[DEAD_FEATURE].status == "dead"
    for f in (5, 6):
        assert labels[f].status == "nonfinite" and labels[f].label == ""
        assert "NaN/inf" in labels[f].extra.message


def test_nonfinite_model_activations_stop_the_cache_build(subject_tokenizer, sae, toy_corpus,
                                                          fast_evaluator, tmp_path):
    broken = subject_model(subject_tokenizer)
    cat = subject_tokenizer(" cat", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        broken.W_E[cat] = float("nan")
    corpus = [t for t in toy_corpus if " cat" in t][:2] + toy_corpus[:10]
    with pytest.raises(NonFiniteActivationError, match="NaN/inf at hook 'blocks.0.hook_resid_pre'"
                       ) as err:
        build_activation_cache(Subject.of(broken, sae), corpus, [0],
                               CacheConfig(cache_dir=tmp_path / "a"))
    assert "float32" in str(err.value) and "cat" in str(err.value)
    assert not list((tmp_path / "a").rglob(META_FILENAME))
    # Broken already on the first token: caught up front, before the corpus is touched.
    with torch.no_grad():
        broken.W_E[subject_tokenizer.bos_token_id] = float("inf")
    with pytest.raises(NonFiniteActivationError, match="already on one token"):
        _label(sae, broken, fast_evaluator, corpus, [0], tmp_path)
    assert _no_cache_written(tmp_path)


# ---------------------------------------------------------------------- dead feature
def test_dead_feature_end_to_end(subject, sae, toy_corpus, fast_evaluator, tmp_path):
    labels = sae.label_features(subject, fast_evaluator, toy_corpus[:30],
                                features=[DEAD_FEATURE, ANIMAL_FEATURE], config=QUICK,
                                cache=CacheConfig(cache_dir=tmp_path / "acts"), examples=FEW)
    dead = labels[DEAD_FEATURE]
    assert dead.status == "dead" and dead.label == "" and dead.steps == 0
    assert "never fires" in dead.extra.message
    assert dead.extra.activation.n_active_tokens == 0
    assert labels[ANIMAL_FEATURE].status == "ok"
    assert labels.to_dict()["results"]  # both results serialise
