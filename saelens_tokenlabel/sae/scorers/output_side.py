"""The output side as a scorer: the subject tokens a feature's decoder direction promotes and
suppresses through the unembedding (`sae.logit_lens`, the g-SAE view), kept in
``result.extra.output_side`` for every result (a dead feature still has a decoder direction),
and ``metrics["output_label_rank"]``: where the label's first token text ranks among the
promoted subject tokens (1 = top; None when no subject token has that text)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float

from ...evaluator.loading import tokenizer_of
from ...records.columns import OUTPUT_SIDE_COLUMNS
from ...records.extra import FeatureExtra, OutputSide, token_logits
from ...records.serial import Config
from ..logit_lens import decoder_logits, normalise_token_text, output_side, token_text_index
from ..subject import Subject
from .registry import ScoreItem, ScoreUpdate, register_scorer

if TYPE_CHECKING:
    from ..hooks import SubjectModel


@dataclass
class OutputSideConfig(Config):
    """How much of the output side is kept."""

    k: int = 10
    """Tokens in each of the promoted and suppressed lists."""

    def check(self) -> None:
        self.need(self.k >= 1, f"k must be >= 1, got {self.k}")


def label_rank(logits_row: Float[torch.Tensor, " d_vocab_subject"], model: SubjectModel,
               label: str) -> int | None:
    """1-based rank, by decoder logit, of the best subject token whose normalised text is the
    label's; None if no subject token has that text."""
    key = normalise_token_text(label)
    ids = token_text_index(tokenizer_of(model), len(logits_row)).get(key) if key else None
    if not ids:
        return None
    best = logits_row[ids].max()
    return int((logits_row[: len(tokenizer_of(model))] > best).sum()) + 1


class OutputSideScorer:
    """The output side (module docstring), for every result."""

    name = "output_side"
    config_type = OutputSideConfig
    columns = OUTPUT_SIDE_COLUMNS
    labeled_only = False

    def score(self, subject: Subject, items: Sequence[ScoreItem], config: Config
              ) -> list[ScoreUpdate]:
        assert isinstance(config, OutputSideConfig)
        feats = [i.feature for i in items]
        logits = decoder_logits(subject, feats).cpu()
        sides = output_side(subject, feats, config.k, logits=logits)
        out = []
        for row, item in enumerate(items):
            side = sides[item.feature]
            extra = FeatureExtra(output_side=OutputSide(
                promoted=token_logits(side["promoted"]),
                suppressed=token_logits(side["suppressed"])))
            r = item.result
            metrics: dict[str, float | None] = {}
            if r.status == "ok" and r.label_tokens:
                rank = label_rank(logits[row], subject.model, r.label_tokens[0])
                metrics["output_label_rank"] = rank
            out.append(ScoreUpdate(metrics, extra))
        return out


register_scorer(OutputSideScorer())
