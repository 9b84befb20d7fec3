"""Exactness of the label injection and of the prefix cache (float64 tiny models: a
HookedTransformer and a TransformerBridge of the same shape)."""

from __future__ import annotations

import torch

from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    conditional_log_q,
    full_prompt_logits,
    hard_prompt_logits,
)

from ..builders import exact

SENTENCES = [
    ("The cat chased the mouse.", "cat"),
    ("A dog", "dog"),
    ("x", "x"),
    ("The bird sang a sweet song and the frog leaped into the pond.", "frog"),
]


def _encoded(ev):
    return [ev.encode(s, w) for s, w in SENTENCES]


def _unpadded(ev, ex, label_ids):
    return ev.model(torch.tensor([ev.prompt_ids(ex, label_ids)]))[0, -1]


def test_prefix_lengths_differ(any_evaluator):
    lengths = {len(e.prefix_ids) for e in _encoded(any_evaluator)}
    assert len(lengths) == len(SENTENCES)


def test_one_hot_label_equals_hard_token(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    cache = PrefixCache(ev, exs)
    for tok in (5, 100, ev.d_vocab - 1):
        onehot = torch.zeros(len(exs), 1, ev.d_vocab, dtype=torch.float64)
        onehot[:, 0, tok] = 1.0
        e = onehot @ ev.model.W_E
        assert torch.equal(e[0, 0], ev.model.W_E[tok])
        full = full_prompt_logits(ev, exs, e)
        cached = cached_logits(ev, cache, torch.arange(len(exs)), e)
        hard = hard_prompt_logits(ev, exs, [tok])
        for i, ex in enumerate(exs):
            ref = _unpadded(ev, ex, [tok])
            torch.testing.assert_close(hard[i], ref, **exact(ev, 1e-12))
            torch.testing.assert_close(full[i], ref, **exact(ev, 1e-12))
            torch.testing.assert_close(cached[i], ref, **exact(ev, 1e-12))


def test_cached_equals_full_for_soft_labels_and_any_row_order(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    cache = PrefixCache(ev, exs, batch_size=3)  # chunked build, mixed lengths
    g = torch.Generator().manual_seed(0)
    rows = torch.tensor([3, 0, 0, 2, 1])
    p = torch.softmax(torch.randn(len(rows), 2, ev.d_vocab, generator=g, dtype=torch.float64),
                      -1)
    e = p @ ev.model.W_E
    full = full_prompt_logits(ev, [exs[i] for i in rows], e)
    cached = cached_logits(ev, cache, rows, e)
    torch.testing.assert_close(cached, full, **exact(ev, 1e-12))


def test_q_is_next_token_distribution_before_label(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    cache = PrefixCache(ev, exs)
    no_kv = PrefixCache(ev, exs, keep_kv=False)
    assert not no_kv.keys and no_kv.capacity == 0
    for i, ex in enumerate(exs):
        ref = ev.model(torch.tensor([list(ex.prefix_ids)]))[0, -1].log_softmax(-1)
        torch.testing.assert_close(cache.log_q[i], ref, **exact(ev, 1e-12))
        torch.testing.assert_close(no_kv.log_q[i], ref, **exact(ev, 1e-12))


def test_system_prompt_is_computed_once_and_shared(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    cache = PrefixCache(ev, exs)
    # Everything up to the sentence is shared: BOS, the system turn, the user turn's opening.
    shared = ev.tokenizer.decode(list(exs[0].prefix_ids[: cache.shared_len]))
    assert shared.endswith("The text is:") or 'The text is: "'.startswith(shared[-14:])
    assert cache.shared_len > 0.6 * min(len(e.prefix_ids) for e in exs)
    assert cache.shared_keys[0].shape[0] == 1  # one copy, broadcast with .expand
    rest = max(len(e.prefix_ids) for e in exs) - cache.shared_len
    assert cache.keys[0].shape[:2] == (len(exs), rest)


def test_memory_budget_evicts_and_recomputes_exactly(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    full = PrefixCache(ev, exs)
    small = PrefixCache(ev, exs, batch_size=2, max_resident=2)
    assert small.keys[0].shape[0] == 2  # only two examples' keys/values on the device
    assert small.bytes_per_example() == full.bytes_per_example()
    e = (torch.softmax(torch.randn(2, 1, ev.d_vocab, dtype=torch.float64), -1)
         @ ev.model.W_E)
    for rows in ([0, 1], [2, 3], [0, 3], [1, 1], [3, 2]):
        r = torch.tensor(rows)
        torch.testing.assert_close(cached_logits(ev, small, r, e), cached_logits(ev, full, r, e),
                                   **exact(ev, 1e-12))
    assert small.recomputed > 0 and full.recomputed == 0
    # A batch larger than the budget is computed without being stored.
    r = torch.tensor([0, 1, 2])
    e3 = e[[0, 1, 0]]
    torch.testing.assert_close(cached_logits(ev, small, r, e3), cached_logits(ev, full, r, e3),
                               **exact(ev, 1e-12))


def test_conditional_q_is_the_next_token_distribution_after_hard_label_tokens(any_evaluator):
    ev = any_evaluator
    exs = _encoded(ev)
    rows = torch.tensor([0, 1, 2, 3, 1])
    label_ids = torch.tensor([[5, 9], [7, 7], [100, 3], [11, 12], [5, 6]])
    ref = torch.stack([
        torch.stack([
            torch.log_softmax(ev.model(torch.tensor([list(exs[r].prefix_ids)
                                                     + ids[: j + 1]]))[0, -1], -1)
            for j in range(2)
        ])
        for r, ids in zip(rows.tolist(), label_ids.tolist(), strict=True)
    ])
    cache = PrefixCache(ev, exs)
    torch.testing.assert_close(conditional_log_q(ev, exs, cache, rows, label_ids), ref,
                               **exact(ev, 1e-10))
    torch.testing.assert_close(conditional_log_q(ev, exs, None, rows, label_ids), ref,
                               **exact(ev, 1e-10))
