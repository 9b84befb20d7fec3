"""SAE-side scores of finished labels: the output side and reflective coherence.

The evaluator-side scores (detection balanced accuracy, precision, recall, F1, AUROC of the
hard label on held-out examples) come from the optimisation itself; this adds what needs the
SAE and the subject model:

* ``result.extra["output_side"]``: ``{"promoted": [[token, logit], ...], "suppressed":
  [...]}`` from `logit_lens.output_side`, for every result (a dead feature still has a
  decoder direction), and ``metrics["output_label_rank"]``: where the label's first token
  text ranks among the subject tokens the direction promotes (1 = top; None when no subject
  token has that text);
* ``metrics["coherence_*"]`` (`coherence.SCORE_KEYS`) for results with status ``ok``, and
  ``extra["coherence_config"]``, the settings they were measured with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from ..result import LabelResult
from ..serial import Config
from .coherence import CoherenceConfig, reflective_coherence
from .logit_lens import decoder_logits, normalise_token_text, output_side, token_text_index

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from ..evaluator import Evaluator


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
) -> None:
    """Add the SAE-side scores to `results` in place (see the module docstring).

    `evaluator` is not needed by these scores (the label text is already decoded in the
    result); it is accepted so that callers can pass what they have.
    """
    del evaluator
    config = config or ScoreConfig()
    if not results:
        return
    feats = [_feature(r) for r in results]
    if config.output_side:
        logits = decoder_logits(sae, model, feats).cpu()
        sides = output_side(sae, model, feats, config.output_k, logits=logits)
        for row, (r, f) in enumerate(zip(results, feats, strict=True)):
            r.extra["output_side"] = sides[f]
            if r.status == "ok" and r.label_tokens:
                r.metrics["output_label_rank"] = label_rank(logits[row], model,
                                                            r.label_tokens[0])
    if config.coherence:
        todo = [(r, f) for r, f in zip(results, feats, strict=True)
                if r.status == "ok" and r.label.strip()]
        if todo:
            scores = reflective_coherence(sae, model, [f for _, f in todo],
                                          [r.label for r, _ in todo], config.coherence_config)
            for (r, _), s in zip(todo, scores, strict=True):
                r.metrics.update(s)
                r.extra["coherence_config"] = config.coherence_config.to_dict()
