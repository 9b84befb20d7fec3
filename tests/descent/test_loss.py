"""The loss terms: the KL pooled over a feature's rows is the row-by-row KL."""

from __future__ import annotations

import torch

from saelens_tokenlabel.descent.loss import LossWeights, label_loss
from saelens_tokenlabel.descent.soft_label import kl_to, label_log_probs


def test_pooled_kl_equals_the_row_by_row_kl_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    d_vocab, n_feat = 50, 3
    mask = torch.ones(d_vocab, dtype=torch.bool)
    mask[[0, 7, 13]] = False  # masked tokens: p exactly 0, log p -inf
    v = torch.randn(n_feat, 2, d_vocab, generator=g, dtype=torch.float64).requires_grad_(True)
    row_feature = torch.tensor([2, 0, 0, 1, 2, 2, 0])
    log_q = torch.log_softmax(torch.randn(7, 2, d_vocab, generator=g, dtype=torch.float64), -1)
    log_q[1, 0, 5] = float("-inf")  # a q that underflowed
    acc = torch.rand(7, generator=g, dtype=torch.float64)
    counts = torch.bincount(row_feature, minlength=n_feat)

    def rowwise():
        log_p = label_log_probs(v, mask)
        p = log_p.exp()
        rows = kl_to(p[row_feature], log_p[row_feature], log_q).sum(-1)
        return torch.zeros(n_feat, dtype=torch.float64).index_add_(0, row_feature, rows) / counts

    want = rowwise()
    (want_grad,) = torch.autograd.grad(want.sum(), v)
    for passes in ([slice(0, 7)], [slice(0, 3), slice(3, 7)]):  # micro-batches add up
        got = torch.zeros(n_feat, dtype=torch.float64)
        grad = torch.zeros_like(v)
        for sl in passes:
            log_p = label_log_probs(v, mask)
            terms = label_loss(log_p, row_feature[sl], acc[sl], log_q[sl], counts,
                               LossWeights(0.0, 0.0, 1.0), with_entropy=sl.start == 0)
            got += terms.kl.detach()
            grad += torch.autograd.grad(terms.total.sum(), v)[0]
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, want_grad, rtol=1e-12, atol=1e-12)
