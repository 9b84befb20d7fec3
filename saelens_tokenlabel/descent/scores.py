"""Binary classification scores of the evaluator's prediction against the feature's activity."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float


def auroc(scores: Float[torch.Tensor, " n"], targets: Bool[torch.Tensor, " n"]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). NaN if one class only."""
    pos, neg = scores[targets], scores[~targets]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def detection_scores(
    margins: Float[torch.Tensor, " n"], targets: Bool[torch.Tensor, " n"], prefix: str = ""
) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, precision, recall, F1 (prediction: margin > 0) and AUROC
    (of the margin logit("1") - logit("0")), and the confusion counts they come from (``tp``,
    ``fn``, ``tn``, ``fp``: what a verdict's interval needs)."""
    margins = margins.detach().double().cpu()
    targets = targets.bool().cpu()
    pred = margins > 0
    tp = int((pred & targets).sum())
    fp = int((pred & ~targets).sum())
    fn = int((~pred & targets).sum())
    tn = int((~pred & ~targets).sum())
    n_pos, n_neg = tp + fn, tn + fp
    tpr = tp / n_pos if n_pos else float("nan")
    tnr = tn / n_neg if n_neg else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr > 0 else 0.0
    out = {
        "accuracy": (tp + tn) / max(1, len(targets)),
        "balanced_accuracy": (tpr + tnr) / 2,
        "precision": precision,
        "recall": tpr,
        "f1": f1,
        "auroc": auroc(margins, targets),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
    }
    # Undefined scores (a class absent) are None: JSON null, unlike NaN.
    return {prefix + k: (None if v != v else float(v)) for k, v in out.items()}
