"""The steering score: what a latent does when added to the model, read against its label.

The g-SAE paper judges latents as actions: add the decoder direction to the residual stream
and see which tokens the model now predicts. For a feature f with label text L:

* on each neutral context (`SteeringConfig.contexts`, text about nothing in particular), the
  subject model runs with ``α · u_f`` added at the SAE's hook at every position, where
  ``u_f = W_dec[f] / ‖W_dec[f]‖`` and α is a multiple (`SteeringConfig.scales`) of the mean
  norm of the hook's activations on those contexts (BOS left out), so one setting fits every
  layer and SAE;
* the label's log-probability is read at the last position: the log of the summed
  probability of the subject tokens whose text is the label's first word (with or without a
  leading space, `logit_lens.token_text_index`), else of the first token of " " + the word;
* the same with `SteeringConfig.n_random` random directions of the same norm (fixed seeds
  per feature), averaged: one random direction's effect on one token varies a lot;
* ``steering_score`` is the mean, over contexts and scales, of the label's log-probability
  gain under the feature's direction minus its gain under the random one (nats). Positive: the
  latent, used as a steering vector, makes the model say what the label says; about 0: it
  does not, whatever its activations suggest.

Metrics: ``steering_score``, ``steering_gain`` (the feature's direction alone) and
``steering_random_gain``. It works for every SAE class (it needs only ``W_dec`` and the hook),
and all of a feature's runs share one batched forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from ...evaluator.loading import tokenizer_of
from ...records.columns import STEERING_COLUMNS
from ...records.serial import Config
from ..hooks import HookSpec, run_to_hook
from ..logit_lens import normalise_token_text, token_text_index
from ..subject import Subject, require_subject
from .registry import ScoreItem, ScoreUpdate, register_scorer

if TYPE_CHECKING:
    from ..hooks import SubjectModel

SCORE_KEYS = ("steering_score", "steering_gain", "steering_random_gain")

DEFAULT_CONTEXTS = (
    "The weather report said that",
    "In the next chapter of the book, we will look at",
    "She opened the door and said",
    "Here is a short list:",
)


@dataclass
class SteeringConfig(Config):
    """How the steering score steers and reads."""

    contexts: tuple[str, ...] = DEFAULT_CONTEXTS
    """Neutral contexts the direction is added to (each read at its last position)."""
    scales: tuple[float, ...] = (0.5, 1.0, 2.0)
    """α, in units of the mean norm of the hook's activations on the contexts."""
    n_random: int = 8
    """Random directions the feature's is compared with (their mean gain)."""
    seed: int = 0
    """Seeds the random directions (a generator per feature: seed + feature)."""

    def check(self) -> None:
        self.contexts = tuple(self.contexts)
        self.scales = tuple(float(s) for s in self.scales)
        self.need(len(self.contexts) >= 1 and all(c.strip() for c in self.contexts),
                  "contexts must hold at least one non-empty text")
        self.need(len(self.scales) >= 1 and all(s > 0 for s in self.scales),
                  "scales must hold at least one positive number")
        self.need(self.n_random >= 1, f"n_random must be >= 1, got {self.n_random}")


def label_token_ids(model: SubjectModel, label: str) -> list[int]:
    """Subject token ids that say the label's first word (module docstring)."""
    words = label.split()
    if not words:
        return []
    ids = token_text_index(tokenizer_of(model), model.cfg.d_vocab).get(normalise_token_text(
        words[0]))
    if ids:
        return list(ids)
    first = tokenizer_of(model)(" " + words[0], add_special_tokens=False)["input_ids"]
    return first[:1]


def _context_tokens(model: SubjectModel, config: SteeringConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The contexts right-padded (BOS first), their mask, on the model's device."""
    bos = tokenizer_of(model).bos_token_id
    seqs = [([bos] if bos is not None else []) +
            tokenizer_of(model)(c, add_special_tokens=False)["input_ids"] for c in config.contexts]
    n = max(len(s) for s in seqs)
    pad = tokenizer_of(model).pad_token_id or 0
    tokens = torch.full((len(seqs), n), int(pad), dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return tokens.to(model.W_E.device), mask.to(model.W_E.device)


@torch.no_grad()
def steered_log_probs(model: SubjectModel, spec: HookSpec, tokens: torch.Tensor,
                      mask: torch.Tensor, vectors: Float[torch.Tensor, "v d"]
                      ) -> Float[torch.Tensor, "v ctx d_vocab"]:
    """Next-token log-probabilities at each context's last token, with each of `vectors`
    added at the hook at every position (one batched pass over vectors × contexts)."""
    v, c = len(vectors), len(tokens)
    rows = tokens.repeat(v, 1)
    # row r gets vector r // c
    add = vectors.to(tokens.device, model.W_E.dtype).repeat_interleave(c, 0)

    def steer(act: torch.Tensor, hook: Any) -> torch.Tensor:  # noqa: ARG001
        if spec.head_index is not None:  # [rows, pos, heads, d_head]: one head's input
            act = act.clone()
            act[:, :, spec.head_index] += add[:, None]
            return act
        # [rows, pos, d] (a residual hook), or [rows, pos, heads, d_head] read flattened
        return act + add.reshape(act.shape[0], 1, *act.shape[2:])

    logits = model.run_with_hooks(rows, attention_mask=mask.repeat(v, 1),
                                  fwd_hooks=[(spec.hook_name, steer)])
    last = mask.repeat(v, 1).sum(1) - 1
    out = logits[torch.arange(len(rows)), last]
    out = out.to(torch.promote_types(out.dtype, torch.float32))
    return torch.log_softmax(out, -1).reshape(v, c, -1)


def _hook_norm(model: SubjectModel, spec: HookSpec, tokens: torch.Tensor,
               mask: torch.Tensor) -> float:
    act = run_to_hook(model, spec, tokens, mask)
    norms = act.reshape(*act.shape[:2], -1).norm(dim=-1)
    counted = mask.bool().clone()
    if tokenizer_of(model).bos_token_id is not None:
        # BOS's residual norm is often many times the others': it would inflate α.
        counted[:, 0] = False
    return float(norms[counted].mean())


def steering_scores(subject: Subject, features: Sequence[int], labels: Sequence[str],
                    config: SteeringConfig | None = None) -> list[dict[str, float | None]]:
    """The steering metrics of each (feature, label) (module docstring); None where the
    subject's tokenizer cannot say the label."""
    subject = require_subject(subject, "steering_scores")
    config = config or SteeringConfig()
    model, sae, spec = subject.model, subject.sae, subject.hook
    tokens, mask = _context_tokens(model, config)
    scale = _hook_norm(model, spec, tokens, mask)
    W_dec = sae.W_dec.detach().reshape(int(sae.cfg.d_sae), -1).to(model.W_E.device)
    base = steered_log_probs(model, spec, tokens, mask,
                             torch.zeros(1, W_dec.shape[1], device=W_dec.device))[0]
    out: list[dict[str, float | None]] = []
    for f, label in zip(features, labels, strict=True):
        ids = label_token_ids(model, label)
        if not ids:
            out.append(dict.fromkeys(SCORE_KEYS))
            continue
        u = W_dec[int(f)].double()
        u = u / u.norm().clamp_min(1e-30)
        gen = torch.Generator().manual_seed(config.seed + int(f))
        r = torch.randn(config.n_random, len(u), generator=gen, dtype=torch.float64)
        r = (r / r.norm(dim=-1, keepdim=True)).to(u.device)
        vectors = torch.stack([a * scale * d for d in (u, *r) for a in config.scales])
        lp = steered_log_probs(model, spec, tokens, mask, vectors.to(model.W_E.dtype))
        said = torch.logsumexp(lp[..., ids], -1) - torch.logsumexp(base[..., ids], -1)
        n = len(config.scales)
        gain, random_gain = float(said[:n].mean()), float(said[n:].mean())
        out.append({"steering_score": gain - random_gain, "steering_gain": gain,
                    "steering_random_gain": random_gain})
    return out


class SteeringScorer:
    """The steering score as a scorer (`registry.Scorer`): for labeled features only."""

    name = "steering"
    config_type = SteeringConfig
    columns = STEERING_COLUMNS
    labeled_only = True

    def score(self, subject: Subject, items: Sequence[ScoreItem], config: Config
              ) -> list[ScoreUpdate]:
        assert isinstance(config, SteeringConfig)
        scores = steering_scores(subject, [i.feature for i in items],
                                 [i.result.label for i in items], config)
        # A label the subject's tokenizer cannot say has no steering score: no metric.
        return [ScoreUpdate({k: v for k, v in s.items() if v is not None}) for s in scores]


register_scorer(SteeringScorer())
