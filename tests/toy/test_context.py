"""The "farm animal vs. cooking" instruments: a hand-written evaluator that reads context, and a
planted subject, SAE and corpus whose features depend on it. Both are exact by construction,
so the tests check exact values: every rating of the table, the soft label's mixture, the
prior, and every activation of every feature on the corpus."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from transformers import PreTrainedTokenizerFast

import saelens_tokenlabel as stl
from saelens_tokenlabel.descent import Batch, StepContext, step
from saelens_tokenlabel.descent.labeler import feature_jobs
from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    full_prompt_logits,
    hard_prompt_logits,
)
from saelens_tokenlabel.sae import CacheConfig, ExampleConfig, ScoreConfig, build_activation_cache
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy import context as ctx
from saelens_tokenlabel.toy.context import (
    ANIMAL_FEATURE,
    COOKING_CUES,
    DEAD_FEATURE,
    FAMILY,
    FARM_CUES,
    LIVESTOCK_FEATURE,
    MEAT_FEATURE,
    MEMBER_GROUPS,
    RANDOM_FEATURES,
    RATING_MARGIN,
    RULES,
    context_evaluator,
    context_sentences,
    context_world,
    rates,
    text_context,
)
from saelens_tokenlabel.toy.planted import single_token

SENTENCES = {
    "farm": "The farmer fed the {w} in the barn.",
    "cooking": "The chef roasted the {w} in the oven.",
    "neutral": "We saw the {w} near the gate.",
    "mixed": "The farmer gave the chef the {w}.",
}
OTHER_LABELS = ("object", "weather", "the", "farm", "kitchen", "lamb", "1", ".")
"""Labels with no concept: distractor label words, a function word, cue words (which the
context head also reads when they sit in the label slot), a member word, an answer token and
punctuation."""
OTHER_WORDS = ("the", "gate", "water", "object", "animal")


@pytest.fixture(scope="module")
def evaluator():
    return context_evaluator(dtype=torch.float64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return context_world(tmp_path_factory.mktemp("context_world"))


def _ids(ev, *words):
    ids = [ev.tokenizer.convert_tokens_to_ids(w) for w in words]
    assert ev.tokenizer.unk_token_id not in ids, words
    return ids


def _margins(ev, examples, label):
    """logit("1") - logit("0") of each example's prompt with `label` written in."""
    logits = hard_prompt_logits(ev, examples, _ids(ev, label))
    return logits[:, ev.yes_id] - logits[:, ev.no_id]


def _cached_margins(ev, cache, label):
    """`_margins` of every example of `cache`, through the prefix cache (one suffix pass)."""
    n = cache.log_q.shape[0]
    e = ev.model.W_E[_ids(ev, label)].expand(n, 1, -1)  # a one-hot label, exactly
    logits = cached_logits(ev, cache, torch.arange(n), e)
    return logits[:, ev.yes_id] - logits[:, ev.no_id]


def test_the_evaluator_is_a_chat_model_the_package_accepts(evaluator):
    ev = evaluator
    assert isinstance(ev.tokenizer, PreTrainedTokenizerFast)  # reloaded via AutoTokenizer
    assert ev.tokenizer.convert_ids_to_tokens([ev.yes_id, ev.no_id]) == ["1", "0"]
    assert ev.model.cfg.n_layers == 1 and ev.model.cfg.normalization_type is None
    assert ctx.rating_distances(ev) == (len(ev.suffix_tail_ids), len(ev.suffix_tail_ids) + 8)
    text = ev.render("The farmer fed the lamb.", "lamb", "livestock")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nRating:")
    # The vocabulary covers the paper's prompt, the corpus, every label and member word.
    words = [w for ws in (*MEMBER_GROUPS.values(), FARM_CUES, COOKING_CUES, RULES,
                          ctx.DISTRACTOR_LABELS) for w in ws]
    assert all(ev.can_spell(w) for w in words)
    for line in context_sentences(60, seed=3):
        ids = ev.tokenizer(ev.render(line[0], "the", "animal"), add_special_tokens=False)
        assert ev.tokenizer.unk_token_id not in ids["input_ids"], line
    assert not ev.can_spell("zebra")  # unknown words are refused, not silently rated
    mask = ev.vocab_mask()
    assert not mask[ev.tokenizer.bos_token_id] and mask[_ids(ev, "livestock")[0]]
    # The same model wrapped again is the same evaluator (nothing hidden in the wrapper).
    again = stl.Evaluator(ev.model)
    assert again.suffix_tail_ids == ev.suffix_tail_ids and again.yes_id == ev.yes_id


def test_every_label_word_and_context_is_rated_as_the_table_says(evaluator):
    ev = evaluator
    words = [w for ws in MEMBER_GROUPS.values() for w in ws] + [*FARM_CUES[:2],
                                                                *COOKING_CUES[:2], *OTHER_WORDS]
    texts = [(t.format(w=w), w) for t in SENTENCES.values() for w in words]
    assert Counter(text_context(t) for t, _ in texts[:: len(words)]) == Counter(
        {"farm": 1, "cooking": 1, None: 2})
    examples = [ev.encode(t, w) for t, w in texts]
    cache = PrefixCache(ev, examples)
    # The cached path is the full prompt's (`test_a_soft_label_reads_as_...` checks it here).
    torch.testing.assert_close(_cached_margins(ev, cache, "livestock")[::9],
                               _margins(ev, examples[::9], "livestock"), rtol=0, atol=1e-12)
    n_yes = 0
    for label in (*RULES, *ctx.DISTRACTOR_LABELS, *OTHER_LABELS):
        got = _cached_margins(ev, cache, label)
        want = torch.tensor([RATING_MARGIN if rates(label, w, text_context(t)) else
                             -RATING_MARGIN for t, w in texts], dtype=got.dtype)
        # Exact: +-margin to float64 rounding, a decisive two-way prediction either way.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9, msg=label)
        n_yes += int((want > 0).sum())
    assert torch.sigmoid(torch.tensor(RATING_MARGIN)) > 0.997
    # Spot checks of the table itself.
    assert rates("livestock", "lamb", "farm") and not rates("livestock", "lamb", "cooking")
    assert rates("meat", "goose", "cooking") and not rates("meat", "goose", None)
    assert rates("animal", "lamb", "cooking") and rates("animal", "dog", None)
    assert rates("food", "bread", "farm") and not rates("food", "dog", "cooking")
    assert not rates("object", "lamb", "farm") and not rates("animal", "farmer", "farm")
    assert n_yes > 100


def test_the_context_head_reads_only_cue_words_anywhere_in_the_text(evaluator):
    ev = evaluator
    texts = ["The lamb walked far from the farm.",             # cue after the word
             "A lamb , a chef and an oven .",                   # two cooking cues
             "The lamb was here.",                              # no cue
             "The farmer and the farmer fed the lamb in the kitchen."]  # 2 farm : 1 cooking
    assert [text_context(t) for t in texts] == ["farm", "cooking", None, None]
    examples = [ev.encode(t, "lamb") for t in texts]
    want = {"livestock": [1, 0, 0, 0], "meat": [0, 1, 0, 0], "animal": [1, 1, 1, 1]}
    for label, signs in want.items():
        got = _margins(ev, examples, label)
        expected = torch.tensor([RATING_MARGIN * (2 * s - 1) for s in signs], dtype=got.dtype)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_heads_attend_one_hot_to_the_label_slot_the_word_and_the_cues(evaluator):
    ev = evaluator
    text = "In the field, the farmer fed a goose."
    ex = ev.encode(text, "goose")
    ids = ev.prompt_ids(ex, _ids(ev, "livestock"))
    _, cache = ev.model.run_with_cache(torch.tensor([ids]))
    pattern = cache["blocks.0.attn.hook_pattern"][0, :, -1]
    n = len(ids)
    label_at, word_at = ctx.rating_distances(ev)
    assert pattern[ctx.LABEL_HEAD, n - 1 - label_at] > 1 - 1e-12
    assert ids[n - 1 - word_at] == _ids(ev, "goose")[0]
    assert pattern[ctx.WORD_HEAD, n - 1 - word_at] > 1 - 1e-12
    cues = [i for i, t in enumerate(ids) if t in _ids(ev, "field", "farmer")]
    assert len(cues) == 2
    torch.testing.assert_close(pattern[ctx.CONTEXT_HEAD, cues],
                               torch.full((2,), 0.5, dtype=pattern.dtype), rtol=0, atol=1e-15)
    # The design margin holds for every distance a prompt can have.
    for d in (label_at, word_at):
        s = ctx.position_scores(d, ev.model.cfg.n_ctx)
        gap = s[d] - torch.cat([s[:d], s[d + 1 :]]).max()
        assert ctx._position_amplitude((label_at, word_at), ev.model.cfg.n_ctx) * gap >= (
            ctx.POSITION_MARGIN - 1e-9)


def test_a_soft_label_reads_as_the_mixture_of_its_concepts(evaluator):
    ev = evaluator
    cases = [("The farmer fed the lamb in the barn.", "lamb"),
             ("The chef roasted the lamb in the oven.", "lamb"),
             ("We saw the dog near the gate.", "dog"),
             ("The chef baked bread in the oven.", "bread"),
             ("The barn was painted red.", "red"),
             ("The farmer fed the lamb in the barn.", "the")]
    examples = [ev.encode(t, w) for t, w in cases]
    g = torch.Generator().manual_seed(0)
    concept_ids = _ids(ev, *RULES)
    logits = torch.randn(len(cases), 1, ev.d_vocab, generator=g, dtype=torch.float64)
    logits[..., concept_ids] += 4.0  # the concept words hold most of the mass
    p = torch.softmax(logits, -1)
    e = p @ ev.model.W_E
    cache = PrefixCache(ev, examples, batch_size=4)
    cached = cached_logits(ev, cache, torch.arange(len(cases)), e)
    full = full_prompt_logits(ev, examples, e)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-12)
    for i, (t, w) in enumerate(cases):
        share = sum(float(p[i, 0, k]) for k, label in zip(concept_ids, RULES, strict=True)
                    if rates(label, w, text_context(t)))
        margin = float(full[i, ev.yes_id] - full[i, ev.no_id])
        assert margin == pytest.approx(2 * RATING_MARGIN * share - RATING_MARGIN, abs=1e-9)
    # Half "animal", half "livestock": sure on farm lambs, undecided on cooking ones.
    half = torch.zeros(2, 1, ev.d_vocab, dtype=torch.float64)
    half[:, 0, _ids(ev, "animal", "livestock")] = 0.5
    both = full_prompt_logits(ev, examples[:2], half @ ev.model.W_E)
    torch.testing.assert_close(both[:, ev.yes_id] - both[:, ev.no_id],
                               torch.tensor([RATING_MARGIN, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-9)


def test_the_prior_shapes_q_at_the_label_slot_and_never_the_ratings(evaluator):
    flat = context_evaluator(prior=None, dtype=torch.float64)
    tilted = context_evaluator(prior={"livestock": 1.0, "meat": -2.0}, dtype=torch.float64)
    examples = [("The farmer fed the lamb in the barn.", "lamb"),
                ("The chef roasted the goose in the oven.", "goose")]
    for ev, bias in ((evaluator, {"animal": 3.0}), (flat, {}),
                     (tilted, {"livestock": 1.0, "meat": -2.0})):
        encoded = [ev.encode(t, w) for t, w in examples]
        log_q = PrefixCache(ev, encoded).log_q
        base = log_q[:, _ids(ev, "thing")[0]]
        for word in ("animal", "livestock", "meat", "bread", "1"):
            torch.testing.assert_close(log_q[:, _ids(ev, word)[0]] - base,
                                       torch.full_like(base, bias.get(word, 0.0)),
                                       rtol=0, atol=1e-12)
        for label in ("animal", "livestock", "meat", "the"):
            torch.testing.assert_close(_margins(ev, encoded, label),
                                       _margins(evaluator, encoded, label), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not one known token"):
        context_evaluator(prior={"zebra": 1.0})


# ---------------------------------------------------------------------------- the planted world
def test_the_corpus_is_seeded_and_contrasts_are_a_minority():
    lines = context_sentences(300, seed=0)
    assert lines == context_sentences(300, seed=0) != context_sentences(300, seed=1)
    family = [(t, c) for t, c in lines if set(ctx._words(t)) & set(FAMILY)]
    assert Counter(c for _, c in family) == {"farm": 120, "cooking": 30}  # 1 in 5 cooking
    for c in ("farm", "cooking"):  # every family word occurs in both contexts
        seen = {w for t, cc in family if cc == c for w in ctx._words(t) if w in FAMILY}
        assert seen == set(FAMILY)
    for text, c in family:  # a cue of its own context comes before the family word
        words = ctx._words(text)
        at = next(i for i, w in enumerate(words) if w in FAMILY)
        assert set(words[:at]) & set(ctx.CONTEXT_CUES[c]), text


def test_every_feature_fires_exactly_where_intended(world, tmp_path):
    tok, sae = world.tokenizer, world.sae
    meta = sae.cfg.metadata
    assert (meta.hook_name, meta.model_name, meta.prepend_bos) == (ctx.HOOK, ctx.SUBJECT_NAME,
                                                                   True)
    assert meta.context_size == 32 and meta.neuronpedia_id == ctx.NEURONPEDIA_ID
    cache = build_activation_cache(Subject.of(world.subject, sae), world.corpus, None,
                                   CacheConfig(cache_dir=tmp_path), progress=False)
    contexts = cache.contexts(range(cache.n_contexts))
    assert len(contexts) == len(world.corpus)
    family = {single_token(tok, f" {w}") for w in FAMILY}
    sign = {single_token(tok, f" {w}"): s for s, cues in ((1, FARM_CUES), (-1, COOKING_CUES))
            for w in cues}
    want = {}
    for c, ids in contexts.items():
        assert ids[0] == tok.bos_token_id
        for p, t in enumerate(ids):
            mean = ctx.CONTEXT_GAIN * sum(sign.get(i, 0) for i in ids[: p + 1]) / (p + 1)
            if t in family:
                want[(c, p, ANIMAL_FEATURE)] = 1.0
                want[(c, p, LIVESTOCK_FEATURE if mean > 0 else MEAT_FEATURE)] = abs(mean)
    got = {}
    for f in (LIVESTOCK_FEATURE, MEAT_FEATURE, ANIMAL_FEATURE, DEAD_FEATURE):
        for c, p, v in zip(*(x.tolist() for x in cache.feature_activations(f)), strict=True):
            got[(c, p, f)] = v
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], abs=1e-5) for k in want)
    fired = {f: {world.contexts[c] for c, _, ff in got if ff == f} for f in (0, 1)}
    assert fired == {LIVESTOCK_FEATURE: {"farm"}, MEAT_FEATURE: {"cooking"}}
    n = Counter(f for *_, f in got)
    assert (n[LIVESTOCK_FEATURE], n[MEAT_FEATURE], n[ANIMAL_FEATURE]) == (120, 30, 150)
    for f in RANDOM_FEATURES:  # random ones fire on some tokens, not all
        assert 0.05 < len(cache.feature_activations(f)[0]) / cache.n_tokens < 0.95


def test_decoder_rows_are_unit_vectors_along_what_each_feature_reads(world):
    sae = world.sae
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.cfg.d_sae))
    for f in range(sae.cfg.d_sae):
        read = (sae.W_enc[:, f] != 0).nonzero().flatten().tolist()
        wrote = (sae.W_dec[f] != 0).nonzero().flatten().tolist()
        assert wrote == (read or [ctx.SPARE_DIM]), f  # the dead one: a spare dimension
    assert float(sae.W_dec[LIVESTOCK_FEATURE].detach() @ sae.W_dec[MEAT_FEATURE].detach()) == 0.0
    again = context_world(world.tokenizer.name_or_path)
    assert torch.equal(again.sae.W_dec, sae.W_dec) and again.corpus == world.corpus
    torch.testing.assert_close(again.subject.W_E, world.subject.W_E, rtol=0, atol=0)


def test_examples_cover_every_family_word_and_contrasts_can_be_left_out(world):
    full = world.examples(LIVESTOCK_FEATURE)
    lean = world.examples(LIVESTOCK_FEATURE, contrasts=False)
    fam = [e for e in full if e[1] in FAMILY]
    assert len(fam) == 150 and sum(e[2] > 0 for e in fam) == 120
    assert all((e[2] > 0) == (world.contexts[e[3]] == "farm") for e in fam)
    dropped = [e for e in full if e not in lean]
    assert len(dropped) == 30
    assert all(e[1] in FAMILY and e[2] == 0 and world.contexts[e[3]] == "cooking"
               for e in dropped)
    others = [e for e in full if e[1] not in FAMILY]
    assert len(others) == len(world.corpus) and all(e[2] == 0 for e in others)
    assert world.examples(LIVESTOCK_FEATURE) == full  # seeded


def test_each_feature_agrees_with_its_label_on_every_example(world, evaluator32):
    """The two instruments agree: the evaluator rates a feature's right label "1" exactly
    where the planted SAE fires, on every example of the world (float32, as labeling runs)."""
    ev = evaluator32
    shown = [(t, w, line) for t, w, _, line in world.examples(LIVESTOCK_FEATURE, negatives=2)]
    cache = PrefixCache(ev, [ev.encode(t, w) for t, w, _ in shown])
    for feature in (LIVESTOCK_FEATURE, MEAT_FEATURE, ANIMAL_FEATURE):
        examples = world.examples(feature, negatives=2)
        assert [(t, w, line) for t, w, _, line in examples] == shown  # the same picks
        margins = _cached_margins(ev, cache, world.labels[feature])
        active = torch.tensor([a > 0 for _, _, a, _ in examples])
        assert torch.equal(margins > 0, active), feature
        assert torch.equal(margins.abs(), torch.full_like(margins, RATING_MARGIN))
        if feature == LIVESTOCK_FEATURE:  # and "animal" is wrong exactly on the contrasts
            wrong = (_cached_margins(ev, cache, "animal") > 0) != active
            assert [examples[i][1:3] for i in wrong.nonzero().flatten()] == [
                (w, 0.0) for _, w, a, line in examples
                if w in FAMILY and world.contexts[line] == "cooking"]


# ---------------------------------------------------------------------------- labeling
def _label(world, evaluator, contrasts, seed):
    data = stl.FeatureData.from_examples(world.examples(LIVESTOCK_FEATURE, contrasts=contrasts),
                                         name=LIVESTOCK_FEATURE)
    return stl.label_feature(data, evaluator, stl.LabelConfig(seed=seed))


@pytest.fixture(scope="module")
def evaluator32():
    return context_evaluator()


# About 1.5 s per seed: seed 0 in the fast tier, seed 1 in the slow one.
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_same_word_contrasts_make_the_labeler_find_livestock(world, evaluator32, seed):
    result = _label(world, evaluator32, True, seed)
    assert result.label == "livestock" and result.converged
    assert result.metrics["heldout_balanced_accuracy"] == 1.0
    # The prior wins the first attempt; the contrasts are its fixable errors.
    first = result.attempts[0]
    assert first.label == "animal" and first.metrics["train_fixable_errors"] > 0


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_without_contrasts_the_prior_gives_animal_and_no_score_sees_it(world, evaluator32,
                                                                         seed):
    result = _label(world, evaluator32, False, seed)
    assert result.label == "animal" and result.converged
    # Too broad: "animal" says 1 for the family words in cooking text, where the feature is
    # silent. But no example shows it, so every split scores it perfect.
    assert rates("animal", "lamb", "cooking") and not rates("livestock", "lamb", "cooking")
    for split in ("train", "validation", "heldout"):
        assert result.metrics[f"{split}_balanced_accuracy"] == 1.0
    assert len(result.attempts) == 1 and math.isfinite(result.probability)


def _edge_losses(evaluator, data, configs, shares):
    """Per config, the descent's loss (`descent.step`, what Adam minimises) over every
    training example of `data`, at each soft label `share` "meat" + (1 - `share`) "animal".
    The configs differ only in their loss weights, so they share the examples and splits."""
    encoded, (job,) = feature_jobs([data.prepare(configs[0])], evaluator, configs[0])
    ctx = StepContext.build(evaluator, encoded, configs[0].performance,
                            evaluator.label_vocab(configs[0]))
    meat, animal = _ids(evaluator, "meat", "animal")
    n = len(job.example_ids)
    batch = Batch(job.example_ids, torch.zeros(n, dtype=torch.long), job.targets.double(), [0])
    out = []
    for config in configs:
        out.append([])
        for share in shares:
            v = torch.full((1, 1, evaluator.d_vocab), -1e4, dtype=torch.float64)  # p = 0 there
            v[0, 0, meat] = math.log(share)
            if share < 1:
                v[0, 0, animal] = math.log(1 - share)
            terms = step(ctx, v.requires_grad_(True), batch, config)
            out[-1].append(float(terms.total[0]))
    return out


def test_a_single_token_is_the_default_objectives_optimum_against_the_prior(world, evaluator):
    """Issue 21: λ_ent·H(p) + λ_kl·KL(p‖q) = (λ_ent − λ_kl)·H(p) − λ_kl·Σ p log q. The meat
    feature under a prior for "animal" (+3 nats): with λ_ent = λ_kl the regulariser is linear
    in p and a meat/animal mixture that still rates every example right costs less than
    "meat"; with the default λ_ent > λ_kl "meat" alone costs least (exact, float64)."""
    data = stl.FeatureData.from_examples(world.examples(MEAT_FEATURE), name=MEAT_FEATURE)
    shares = (1.0, 0.9, 0.65, 0.5)
    default = stl.LabelConfig()
    paper = stl.LabelConfig(lambda_ent=0.2, lambda_kl=0.2)  # the animal preset's weights
    new, old = _edge_losses(evaluator, data, [default, paper], shares)
    assert new[0] < min(new[1:])
    assert old[shares.index(0.65)] < old[0] - 0.1
    assert default.lambda_ent > default.lambda_kl


def test_the_default_first_attempt_converges_on_meat_against_the_prior(world, evaluator32):
    # With λ_ent = λ_kl the first attempt sat in a meat/animal mixture for all 500 steps
    # before a restart found "meat" (bench/bench_objective.py).
    data = stl.FeatureData.from_examples(world.examples(MEAT_FEATURE), name=MEAT_FEATURE)
    result = stl.label_feature(data, evaluator32, stl.LabelConfig(seed=0))
    assert result.label == "meat" and result.converged
    assert len(result.attempts) == 1 and result.attempts[0].converged
    assert result.metrics["heldout_balanced_accuracy"] == 1.0


def _sae_label(world, evaluator, tmp_path, seed, n_contrast=None):
    examples = ExampleConfig() if n_contrast is None else ExampleConfig(n_contrast=n_contrast)
    labels = world.sae.label_features(world.subject, evaluator, world.corpus,
                                      features=[LIVESTOCK_FEATURE],
                                      config=stl.LabelConfig(seed=seed), examples=examples,
                                      cache=CacheConfig(cache_dir=tmp_path), progress=False,
                                      scores=ScoreConfig(scorers=()))
    return labels[LIVESTOCK_FEATURE]


# Issue 21: on the path researchers use, with the default ExampleConfig and LabelConfig.
@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.slow)
                                       for s in (1, 2, 3))])
def test_on_the_sae_path_contrasts_give_the_specific_label(world, evaluator32, tmp_path, seed):
    """A feature on a family of words (lamb, duck, ...) that fires only in farm text, an
    evaluator that reads context and favours the broader "animal" by 3 nats: the default
    example selection brings the family words in cooking text where the feature is silent, and
    the label is "livestock", explained."""
    result = _sae_label(world, evaluator32, tmp_path, seed)
    assert result.label == "livestock" and result.converged
    assert result.verdict.value == "explained"
    counts = result.extra.example_counts
    assert counts["contrast"] == ExampleConfig().n_contrast
    contrasts = [e for e in result.extra.examples if e.kind == "contrast"]
    assert all(e.word.strip() in FAMILY and text_context(e.text) == "cooking"
               for e in contrasts)
    extra = result.extra
    assert not (extra.dropped or {}).get("unspellable_word")
    examples = extra.examples
    assert sum(e.activation > 0 for e in examples) >= 10
    for e in examples:
        assert evaluator32.can_spell(e.word)
        if e.activation > 0:
            assert e.word.strip() in FAMILY and text_context(e.text) == "farm", e


@pytest.mark.slow
def test_without_the_contrast_quota_the_broad_label_slips_through_unseen(world, evaluator32,
                                                                        tmp_path):
    """The same runs with `n_contrast=0`: at least one seed ends on "animal", too broad, and
    its held-out score does not see it (the random and near-miss picks seldom hold a family
    word in cooking text): what the contrasts are for."""
    broad = [r for r in (_sae_label(world, evaluator32, tmp_path, seed, n_contrast=0)
                         for seed in range(4)) if r.label == "animal"]
    assert broad
    for r in broad:
        assert r.metrics["heldout_balanced_accuracy"] >= 0.9
        assert "contrast" not in (r.extra.example_counts or {})

