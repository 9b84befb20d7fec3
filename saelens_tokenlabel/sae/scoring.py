"""SAE-side scores of finished labels: the output side and reflective coherence.

The evaluator-side scores (detection balanced accuracy, precision, recall, F1, AUROC of the
hard label on held-out examples) come from the optimisation itself; this adds what needs the
SAE and the subject model:

* ``result.extra.output_side`` (`records.OutputSide`: promoted and suppressed tokens with
  their logits) from `logit_lens.output_side`, for every result (a dead feature still has a
  decoder direction), and ``metrics["output_label_rank"]``: where the label's first token
  text ranks among the subject tokens the direction promotes (1 = top; None when no subject
  token has that text);
* ``metrics["coherence_*"]`` (`coherence.SCORE_KEYS`) for results with status ``ok``, and
  ``extra.coherence_config``, the settings they were measured with;
* ``metrics["steering_*"]`` (`steering.SCORE_KEYS`) for results with status ``ok``: what the
  latent does to the label's log-probability when added to the model.

The results are built anew (`dataclasses.replace`), never written into.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from ..records.extra import OutputSide, token_logits
from ..records.result import LabelResult
from ..records.serial import Config
from .coherence import CoherenceConfig, reflective_coherence
from .logit_lens import decoder_logits, normalise_token_text, output_side, token_text_index
from .steering import SteeringConfig, steering_scores

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from ..evaluator.model import Evaluator


@dataclass
class ScoreConfig(Config):
    """Which SAE-side scores `add_sae_scores` computes."""

    output_side: bool = True
    """Store the decoder direction's promoted and suppressed subject tokens."""
    output_k: int = 10
    """Tokens in each of the promoted and suppressed lists."""
    coherence: bool = True
    """Measure reflective coherence of each label (greedy generation on the subject model)."""
    coherence_config: CoherenceConfig = field(default_factory=CoherenceConfig)
    """Templates, neutral texts, generation length and threshold of reflective coherence."""
    steering: bool = True
    """Measure the steering score of each label (`steering`: the decoder direction added to
    the subject model on neutral contexts, against a random direction)."""
    steering_config: SteeringConfig = field(default_factory=SteeringConfig)
    """Contexts, scales and seed of the steering score."""

    def check(self) -> None:
        self.need(self.output_k >= 1, f"output_k must be >= 1, got {self.output_k}")


def _feature(result: LabelResult) -> int:
    f = result.feature
    if isinstance(f, bool) or not str(f).lstrip("-").isdigit():
        raise ValueError(f"SAE scores need results whose feature is an SAE feature index; got "
                         f"feature={f!r}.")
    return int(f)


def label_rank(logits_row: Float[torch.Tensor, " d_vocab_subject"], model: HookedTransformer,
               label: str) -> int | None:
    """1-based rank, by decoder logit, of the best subject token whose normalised text is the
    label's; None if no subject token has that text."""
    key = normalise_token_text(label)
    ids = token_text_index(model.tokenizer, len(logits_row)).get(key) if key else None
    if not ids:
        return None
    best = logits_row[ids].max()
    return int((logits_row[: len(model.tokenizer)] > best).sum()) + 1


def add_sae_scores(
    results: Sequence[LabelResult],
    sae: Any,
    model: HookedTransformer,
    evaluator: Evaluator | None = None,
    config: ScoreConfig | None = None,
) -> list[LabelResult]:
    """`results` with the SAE-side scores added (see the module docstring), as new results
    (`dataclasses.replace`); the given ones are left as they were, so callers use the return
    value: ``results = add_sae_scores(results, sae, model)``.

    `evaluator` is not needed by these scores (the label text is already decoded in the
    result); it is accepted so that callers can pass what they have.
    """
    del evaluator
    config = config or ScoreConfig()
    results = list(results)
    if not results:
        return results
    feats = [_feature(r) for r in results]
    metrics = [dict(r.metrics) for r in results]
    extras = [r.extra for r in results]
    if config.output_side:
        logits = decoder_logits(sae, model, feats).cpu()
        sides = output_side(sae, model, feats, config.output_k, logits=logits)
        for i, (r, f) in enumerate(zip(results, feats, strict=True)):
            extras[i] = replace(extras[i], output_side=OutputSide(
                promoted=token_logits(sides[f]["promoted"]),
                suppressed=token_logits(sides[f]["suppressed"])))
            if r.status == "ok" and r.label_tokens:
                metrics[i]["output_label_rank"] = label_rank(logits[i], model, r.label_tokens[0])
    labeled = [i for i, r in enumerate(results) if r.status == "ok" and r.label.strip()]
    if config.coherence and labeled:
        scores = reflective_coherence(sae, model, [feats[i] for i in labeled],
                                      [results[i].label for i in labeled],
                                      config.coherence_config)
        for i, s in zip(labeled, scores, strict=True):
            metrics[i].update(s)
            extras[i] = replace(extras[i], coherence_config=config.coherence_config.to_dict())
    if config.steering and labeled:
        scores = steering_scores(sae, model, [feats[i] for i in labeled],
                                 [results[i].label for i in labeled], config.steering_config)
        for i, s in zip(labeled, scores, strict=True):
            metrics[i].update({k: v for k, v in s.items() if v is not None})
    return [replace(r, metrics=m, extra=e)
            for r, m, e in zip(results, metrics, extras, strict=True)]
