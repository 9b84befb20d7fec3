"""Same-word contrasts: the silent occurrences of the words a feature fires on, allocated in
proportion to its firings, spread over contexts, found in the cache without the subject model,
the same however the cache is sharded and whichever features are selected."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from saelens_tokenlabel.records.data import FeatureData
from saelens_tokenlabel.records.splits import split_examples
from saelens_tokenlabel.sae import ExampleConfig, WordDecoder, select_examples
from saelens_tokenlabel.sae import contrasts as contrasts_module
from saelens_tokenlabel.sae.contrasts import allocate, int_keys
from saelens_tokenlabel.sae.extras import feature_extra
from saelens_tokenlabel.sae.render import contexts_needed, render_feature
from saelens_tokenlabel.sae.sampling import hash_keys

from .planted import ANIMAL_FEATURE, ENDOFTEXT, SLOTS
from .test_examples import BOS, make_cache


def test_allocate_spreads_the_quota_in_proportion_to_the_firings():
    toks = torch.tensor([7] * 50 + [8] * 30 + [9] * 19 + [3])  # 3: one stray firing
    assert allocate(toks, 20) == {7: 10, 8: 6, 9: 4}
    assert allocate(toks, 0) == {} and allocate(torch.zeros(0, dtype=torch.long), 5) == {}
    # Largest remainders: 3 over three equal ids, ties to the smaller id.
    assert allocate(torch.tensor([5, 6, 6, 5, 4, 4]), 2) == {4: 1, 5: 1}
    for n in range(1, 40):
        assert sum(allocate(toks, n).values()) == n


def test_hash_keys_take_one_salt_or_one_per_token():
    ctx, pos = torch.randint(0, 1 << 30, (200,)), torch.randint(0, 512, (200,))
    for salt in (0, 7, 1_000_003 * 5 + 99, (1 << 32) + 3):
        assert torch.equal(hash_keys(ctx, pos, salt), hash_keys(ctx, pos, torch.full((200,),
                                                                                      salt)))


@pytest.fixture
def worded(tmp_path):
    """60 contexts of 12 tokens. Feature 0 fires on token 7 in every third context only and
    on token 9 at odd positions, once on token 20 (a stray firing); feature 1 fires on token
    7 everywhere (no contrast exists); feature 2 on token 8 in the first ten contexts."""
    rng = random.Random(0)
    contexts = []
    for _ in range(60):
        ids = [BOS] + [rng.choice([7, 7, 8, 9, 9, *range(10, 30)]) for _ in range(11)]
        contexts.append(ids)
    entries = {}
    stray = False
    for c, ids in enumerate(contexts):
        for p, t in enumerate(ids):
            # Distinct activations: the top picks have no ties to break.
            if t == 7 and c % 3 == 0:
                entries[(c, p, 0)] = 1.0 + c / 100 + p / 10_000
            if t == 9 and p % 2:
                entries[(c, p, 0)] = 0.5 + c / 1000 + p / 100_000
            if t == 20 and not stray:
                entries[(c, p, 0)], stray = 0.1, True
            if t == 7:
                entries[(c, p, 1)] = 2.0
            if t == 8 and c < 10:
                entries[(c, p, 2)] = 3.0 + c / 100 + p / 10_000
    return contexts, entries, tmp_path


def _expected(contexts, entries, feature, quota, seed):
    """The picks by their definition, in plain Python: per token id, its silent occurrences
    with the smallest keys of the feature (the shared 40-bit key minus the feature's phase,
    modulo 2**40; ties: the earlier position), a context's first occurrence ranking before
    any second one."""
    phase = int(int_keys(torch.tensor([feature]), torch.tensor([0]),
                         seed * 1_000_003 + (1 << 34)))
    out = []
    for t, q in quota.items():
        occ = [(c, p) for c, ids in enumerate(contexts) for p, x in enumerate(ids)
               if x == t and x != BOS and entries.get((c, p, feature), 0.0) <= 0]
        if not occ:
            continue
        u = int_keys(torch.tensor([c for c, _ in occ]), torch.tensor([p for _, p in occ]),
                     seed * 1_000_003 + (1 << 33)).tolist()
        keyed = sorted(((k - phase) % (1 << 40), c, p) for (c, p), k in zip(occ, u, strict=True))
        seen: set[int] = set()
        ranked = []
        for k, c, p in keyed:
            ranked.append((k + (1 << 40) * (c in seen), c, p))
            seen.add(c)
        out += [(c, p, t) for _, c, p in sorted(ranked)[: 2 * q + 2]]
    return out


def test_contrasts_are_the_silent_occurrences_of_the_active_words(worded, monkeypatch):
    contexts, entries, tmp = worded
    cfg = ExampleConfig(n_contrast=6, reservoir_size=10_000, seed=3)
    sels, _ = select_examples(make_cache(tmp / "a", contexts, entries), [0, 1, 2], cfg)
    s = sels[0]
    active_tokens = [contexts[c][p] for (c, p, f) in entries if f == 0]
    # The quota follows the firings: no share for the stray token 20.
    assert s.contrast_quota == allocate(torch.tensor(active_tokens), 6)
    assert set(s.contrast_quota) == {7, 9}
    assert s.contrast == _expected(contexts, entries, 0, s.contrast_quota, 3)
    for c, p, t in s.contrast:
        assert contexts[c][p] == t and p != 0 and (c, p, 0) not in entries
    for t, q in s.contrast_quota.items():
        mine = [c for c, _, tok in s.contrast if tok == t]
        assert len(mine) == 2 * q + 2
        # Distinct contexts as far as the corpus has them: every context with a silent
        # occurrence is used once before any is used twice.
        n_ctx = len({c for c, ids in enumerate(contexts) for p, x in enumerate(ids)
                     if x == t and (c, p, 0) not in entries})
        assert len(set(mine[:n_ctx])) == min(n_ctx, len(mine))
    # The feature that fires on every occurrence of its word has no contrast.
    assert sels[1].contrast_quota == {7: 6} and sels[1].contrast == []
    assert sels[2].contrast == _expected(contexts, entries, 2, sels[2].contrast_quota, 3)
    # The same picks however the cache is sharded, whichever features are selected, and
    # however the join is chunked.
    monkeypatch.setattr(contrasts_module, "FIRST_WINDOW", 1)  # many windows per shard
    for shard_tokens, feats in ((13, [0]), (40, [2, 0]), (10_000, [0, 1])):
        other, _ = select_examples(
            make_cache(tmp / f"s{shard_tokens}", contexts, entries, shard_tokens=shard_tokens),
            feats, cfg)
        assert other[0] == s  # contrasts, their neighbours' activations, everything
        if 2 in feats:
            assert other[2] == sels[2]


def test_no_contrasts_without_a_quota(worded):
    contexts, entries, tmp = worded
    sels, _ = select_examples(make_cache(tmp / "z", contexts, entries), [0],
                              ExampleConfig(n_contrast=0))
    assert sels[0].contrast_quota == {} and sels[0].contrast == []


FARM = ("The {a} grazed in the field.", "A farmer fed the {a} at dawn.")
KITCHEN = ("She roasted the {a} with herbs.", "The {a} tasted good.", "I cut the {a} thin.")


def _world(tokenizer, n=90, seed=0):
    """A context-dependent feature, written straight into a cache: it fires on the animal
    words only in farm sentences, never in kitchen ones (a planted "livestock" feature).
    Each sentence is one context."""
    rng = random.Random(seed)
    animals = SLOTS["animal"][:8]
    contexts, entries, farm = [], {}, []
    for i in range(n):
        is_farm = i % 3 == 0
        # Every context's text differs (within the window shown, too). The first animal is
        # never cooked: it has no silent occurrence.
        text = f"Day {i}. " + rng.choice(FARM if is_farm else KITCHEN).format(
            a=rng.choice(animals if is_farm else animals[1:]))
        ids = [tokenizer.convert_tokens_to_ids(ENDOFTEXT), *tokenizer(text)["input_ids"]]
        for p, t in enumerate(ids):
            if is_farm and tokenizer.decode([t]).strip() in animals:
                entries[(i, p, ANIMAL_FEATURE)] = 1.0 + (i % 4)
        contexts.append(ids)
        farm.append(is_farm)
    return contexts, entries, farm, set(animals)


def _render(cache, cfg, tokenizer):
    sels, pool = select_examples(cache, [ANIMAL_FEATURE], cfg)
    sel = sels[ANIMAL_FEATURE]
    ctx = cache.contexts(sorted(contexts_needed(sel, pool)))
    return sel, pool, render_feature(sel, pool, ctx, WordDecoder(tokenizer), cfg,
                                     cache.special_ids)


def test_a_feature_that_fires_on_a_word_in_some_contexts_gets_its_silent_occurrences(
        subject_tokenizer, tmp_path):
    contexts, entries, farm, animals = _world(subject_tokenizer)
    cache = make_cache(tmp_path / "c", contexts, entries, d_sae=8, shard_tokens=150)
    cfg = ExampleConfig(n_top=10, n_quantile=10, n_random=20, n_near_miss=20)
    sel, pool, out = _render(cache, cfg, subject_tokenizer)
    kinds = Counter(out.kinds)
    assert kinds["contrast"] == cfg.n_contrast == 20
    for (text, word, act), kind, c in zip(out.examples, out.kinds, out.contexts, strict=True):
        if kind == "contrast":
            # The feature's own word, where it is silent: kitchen sentences only.
            assert word in animals and act == 0.0 and not farm[c] and word in text
    assert len({c for c, k in zip(out.contexts, out.kinds, strict=True) if k == "contrast"}) == 20
    # Each word got its quota (the words are spread as the feature's firings are), but the
    # one never cooked, whose share went to the others.
    shown = Counter(w for (_, w, _), k in zip(out.examples, out.kinds, strict=True)
                    if k == "contrast")
    quota = {subject_tokenizer.decode([t]).strip(): q for t, q in sel.contrast_quota.items()}
    never = SLOTS["animal"][0]
    assert quota[never] >= 1 and shown[never] == 0
    assert all(shown[w] >= q for w, q in quota.items() if w != never)
    extra = feature_extra(sel, pool, out, cfg)
    assert extra.example_counts["contrast"] == 20
    assert {e.kind for e in extra.examples} >= {"top", "contrast", "near_miss", "random"}
    # Split by context like the others: each contrast is its own context's group.
    data = FeatureData.from_examples(out.rated())
    ex = data.examples()
    split = split_examples([e.group for e in ex.items], [e.word for e in ex.items],
                           [e.active for e in ex.items], 0.2, 0.2, 0)
    side = {i: s for s, idx in enumerate((split.train, split.validation, split.heldout))
            for i in idx}
    by_ctx: dict[int, set[int]] = {}
    for i, e in enumerate(ex.items):
        by_ctx.setdefault(e.group, set()).add(side[i])
    assert all(len(v) == 1 for v in by_ctx.values())
    # Without contrasts, (almost) no silent animal word is shown: random picks hit few.
    _, _, none = _render(cache, ExampleConfig(n_top=10, n_quantile=10, n_random=20,
                                              n_near_miss=20, n_contrast=0), subject_tokenizer)
    silent = sum(w in animals and a == 0 for _, w, a in none.examples)
    assert "contrast" not in none.kinds and silent <= 3


def test_a_contrast_is_silent_over_its_whole_word(subject_tokenizer, tmp_path):
    # 猫 is three byte tokens. The feature fires on its last byte in some contexts; in
    # others on its first byte only: there the last byte is silent but the word is not, so
    # it is no contrast. A character that merely ends in the same byte is another word.
    def ids_of(text):
        return subject_tokenizer(text, add_special_tokens=False)["input_ids"]

    cat = ids_of("猫")
    other = chr(ord("猫") - 0x80)  # another character ending in the same UTF-8 byte
    assert len(cat) == 3 and ids_of(other)[-1] == cat[-1] and ids_of(other) != cat
    last = cat[-1]
    bos = subject_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    contexts, entries = [], {}
    for i in range(24):
        text = f"{i} " + ("我的猫很可爱" if i % 4 else "他的猫在公园里") + other
        ids = [bos, *ids_of(text)]
        starts = [p for p in range(len(ids) - 2) if ids[p : p + 3] == cat]
        for p in starts:
            if i % 3 == 0:
                entries[(i, p + 2, 3)] = 2.0  # fires on the last byte
            elif i % 3 == 1:
                entries[(i, p, 3)] = 2.0  # fires on the first byte only
        contexts.append(ids)
    cache = make_cache(tmp_path / "zh", contexts, entries, d_sae=8, shard_tokens=64)
    cfg = ExampleConfig(n_top=4, n_quantile=4, n_random=4, n_near_miss=4, n_contrast=8)
    sels, pool = select_examples(cache, [3], cfg)
    sel = sels[3]
    assert last in sel.contrast_quota
    ctx = cache.contexts(sorted(contexts_needed(sel, pool)))
    out = render_feature(sel, pool, ctx, WordDecoder(subject_tokenizer), cfg, cache.special_ids)
    shown = [(w, c) for (_, w, _), k, c in zip(out.examples, out.kinds, out.contexts,
                                               strict=True) if k == "contrast"]
    # Only contexts where the whole word is silent (the kept picks of the shared byte
    # tokens include other characters, which are not shown).
    assert shown and all(w == "猫" and c % 3 == 2 for w, c in shown)
