"""Propose, verify, fall back: the SAE-side stage of amortised labeling.

A group of features gets the map's proposals (`amortize.Amortizer.propose`, from each
feature's decoder row, `feature_inputs`). The map's `candidates` best labels are scored as hard
labels on the feature's own examples by the evaluator (`descent.verify`: the same splits and
scorer as a descent's, the best by the descent's selection score accepted when it clears the
bar on the training and validation examples).

The driver prepares each group (`prepare_verification`: examples rendered, the candidates of
every labelable feature in a `VerifyBatch`), the evaluator scores it (`verify_batch`, here or
in a Ray actor), and the driver finishes it (`finish_verification`); `verify_group` is the
three in this process.

Accepted proposals become results with ``method="amortised"``; the other features come back
as a `LabelBatch` to descend, warm-started from their proposals
(``method="warm_started"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from ...descent.batch import LabelBatch
from ...descent.verify import (
    Checked,
    VerifyBatch,
    accepts,
    proposal_results,
    rejected_proposals,
    verify_batch,
)
from ...records.result import Attempt, LabelResult
from ...records.verdict import selection_score
from ...sae.batches import BatchStage, prepare_batch
from .config import AmortizeConfig
from .map import Proposal, init_logits

if TYPE_CHECKING:
    from sae_lens import SAE
__all__ = ["Verified", "accepts", "feature_inputs", "finish_verification",
           "prepare_verification", "promise", "proposal_results", "rejected_proposals",
           "verify_group", "weighted"]



def feature_inputs(sae: SAE[Any], features: list[int], inputs: tuple[str, ...] = ("decoder",)
                   ) -> Float[torch.Tensor, "n d"]:
    """What the map reads of each feature: its decoder row and/or encoder column, each
    unit-normalised (float64, CPU)."""
    idx = torch.tensor(features, dtype=torch.long)
    parts = []
    with torch.no_grad():
        if "decoder" in inputs:
            w_dec = sae.W_dec.detach().reshape(int(sae.cfg.d_sae), -1)
            parts.append(w_dec[idx].double().cpu())
        if "encoder" in inputs:
            w_enc = sae.W_enc.detach().reshape(-1, int(sae.cfg.d_sae))
            parts.append(w_enc[:, idx].T.double().cpu())
    return torch.cat([torch.nn.functional.normalize(p, dim=-1) for p in parts], dim=-1)


@dataclass(frozen=True)
class Verified:
    """A group's outcome: results to keep now, and a batch to descend."""

    results: list[LabelResult]
    """Accepted proposals (``method="amortised"``) and features needing no label (dead,
    unlabelable), each with its extra attached."""
    descend: LabelBatch
    """The rejected features, warm-started from their proposals (empty if none)."""


def verify_group(group: list[int], stage: BatchStage, proposals: dict[int, Proposal],
                 config: AmortizeConfig, bar: float) -> Verified:
    """Score each feature's proposal on its examples, in this process; accept it or send it
    to descent."""
    base, check = prepare_verification(group, stage, proposals, config, bar)
    return finish_verification(base, verify_batch(check, stage.evaluator, stage.config),
                               stage, config, bar)


def prepare_verification(group: list[int], stage: BatchStage, proposals: dict[int, Proposal],
                         config: AmortizeConfig, bar: float) -> tuple[LabelBatch, VerifyBatch]:
    """Driver side, before verifying: the group prepared (`prepare_batch`: examples,
    extras, features needing no label) and what the evaluator scores (`VerifyBatch`: each
    feature's first `candidates` proposals)."""
    batch = prepare_batch(group, stage)
    cands = {int(p.name): proposals[int(p.name)].ranked[:config.candidates]
             for p in batch.prepared}
    return batch, VerifyBatch(batch.prepared, cands, bar)


def finish_verification(batch: LabelBatch, checked: Checked, stage: BatchStage,
                        config: AmortizeConfig, bar: float) -> Verified:
    """Driver side, after verifying: the accepted results with their extras, and the
    rejected features as a batch to descend, warm-started from their scored candidates."""
    datas = {int(p.name): p for p in batch.prepared}
    taken = {int(r.feature) for r in checked.accepted}
    rest = [f for f in datas if f not in taken]
    tried = checked.tried
    # A promising candidate starts with the share of the probability a logit-lens warm start
    # gets; with none, the descent starts cold.
    label = stage.config
    start = label.warm_start_options.start_logit(int(stage.evaluator.label_vocab(label).sum()))
    descend = LabelBatch(
        features=rest, prepared=[datas[f] for f in rest],
        init_logits=[init_logits(weighted(tried[f], bar, label.label_length),
                                 stage.evaluator.d_vocab, start) for f in rest],
        extras={f: batch.extras[f] for f in rest}, before={f: tried[f] for f in rest},
        method="warm_started", overrides=config.warm_overrides(label.label_length))
    return Verified(batch.done + batch.finish(checked.accepted), descend)


def weighted(tried: list[Attempt], bar: float, label_length: int
             ) -> list[tuple[tuple[int, ...], float]]:
    """A rejected feature's candidates of the descent's label length, each weighted for the
    warm start by the map's share and its `promise` (the descent has `label_length` slots: a
    longer or shorter label cannot start it)."""
    return [(tuple(a.label_token_ids), a.probability * promise(a.metrics, bar)) for a in tried
            if len(a.label_token_ids) == label_length]


def promise(metrics: dict[str, float | None], bar: float) -> float:
    """How far a rejected label got from chance (balanced accuracy 0.5) towards the bar, in
    [0, 1], on the split attempts are chosen by: a label no better than chance gives its
    descent nothing to start from, a near miss nearly its whole share."""
    return min(1.0, max(0.0, (selection_score(metrics) - 0.5) / max(bar - 0.5, 1e-9)))
