"""The steering score: a latent's decoder direction added to the subject model, read on the
label's tokens against a random direction."""

from __future__ import annotations

import torch

from saelens_tokenlabel.sae.scorers.steering import (
    SteeringConfig,
    _context_tokens,
    label_token_ids,
    steering_scores,
)
from saelens_tokenlabel.sae.subject import Subject

from .planted import D_MODEL, single_token, subject_model

HOOK = "blocks.1.hook_resid_post"  # the last block: what it writes goes straight to the logits


def _tied_subject(tokenizer):
    """The subject model in float64 with its unembedding tied to its embedding, so that adding
    a token's embedding direction before the unembedding says that token."""
    model = subject_model(tokenizer).to(torch.float64)
    with torch.no_grad():
        model.W_U.copy_(model.W_E.T)
    return model


def _sae(rows: torch.Tensor):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=len(rows), dtype="float64",
                                        metadata=SAEMetadata(hook_name=HOOK)))
    with torch.no_grad():
        sae.W_dec.copy_(rows)
    return sae


def test_a_latent_that_writes_the_labels_direction_steers_towards_it(subject_tokenizer):
    model = _tied_subject(subject_tokenizer)
    cat = single_token(subject_tokenizer, " cat")
    g = torch.Generator().manual_seed(3)
    n_random = 12
    rows = torch.cat([model.W_E[cat].detach()[None],
                      torch.randn(n_random, D_MODEL, generator=g, dtype=torch.float64)])
    sae = _sae(rows)
    writes_cat, *random_latents = steering_scores(Subject.of(model, sae), list(range(1 + n_random)),
                                                  ["cat"] * (1 + n_random))
    assert writes_cat["steering_score"] > 2.0  # nats, against random directions
    assert writes_cat["steering_gain"] > writes_cat["steering_random_gain"]
    # Latents with random directions score about 0: one direction's effect on one token
    # varies, so the check is on their mean, and none comes near the latent that says "cat".
    scores = torch.tensor([r["steering_score"] for r in random_latents])
    assert abs(float(scores.mean())) < 0.2 * writes_cat["steering_score"]
    assert float(scores.max()) < 0.5 * writes_cat["steering_score"]
    assert label_token_ids(model, "") == []


@torch.no_grad()
def test_steering_score_by_hand(subject_tokenizer):
    """One context at a time, each vector added by its own hook: the same numbers."""
    model = _tied_subject(subject_tokenizer)
    g = torch.Generator().manual_seed(5)
    rows = torch.randn(3, D_MODEL, generator=g, dtype=torch.float64)
    sae = _sae(rows)
    config = SteeringConfig(contexts=("The weather report said that", "Here is"),
                            scales=(0.5, 3.0), n_random=2, seed=11)
    got = steering_scores(Subject.of(model, sae), [2], ["dog"], config)[0]
    tokens, mask = _context_tokens(model, config)
    ids = label_token_ids(model, "dog")
    norms = []
    for i in range(len(tokens)):
        n = int(mask[i].sum())
        _, cache = model.run_with_cache(tokens[i : i + 1, :n], names_filter=HOOK)
        norms.append(cache[HOOK][0, 1:].norm(dim=-1))  # BOS left out
    scale = float(torch.cat(norms).mean())

    def said(vector):
        out = []
        for i in range(len(tokens)):
            n = int(mask[i].sum())

            def add(act, hook):
                return act + vector

            logits = model.run_with_hooks(tokens[i : i + 1, :n], fwd_hooks=[(HOOK, add)])
            lp = torch.log_softmax(logits[0, -1], -1)
            out.append(torch.logsumexp(lp[ids], -1))
        return torch.stack(out)

    base = said(torch.zeros(D_MODEL, dtype=torch.float64))
    u = rows[2] / rows[2].norm()
    r = torch.randn(2, D_MODEL, generator=torch.Generator().manual_seed(11 + 2),
                    dtype=torch.float64)
    r = r / r.norm(dim=-1, keepdim=True)
    gain = torch.stack([said(a * scale * u) - base for a in config.scales]).mean()
    random_gain = torch.stack([said(a * scale * d) - base for d in r
                               for a in config.scales]).mean()
    assert abs(got["steering_gain"] - float(gain)) < 1e-9
    assert abs(got["steering_random_gain"] - float(random_gain)) < 1e-9
    assert abs(got["steering_score"] - float(gain - random_gain)) < 1e-9
