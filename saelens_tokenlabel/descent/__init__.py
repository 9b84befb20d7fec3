"""The descent (layer 4): token-space gradient descent on the label logits v, for one or many
features. May import `records/`, `formats/` and `evaluator/`.

One job per module:

* `soft_label`, `loss`, `sampler`: p and e = p @ W_E, the paper's loss, the batches;
* `scores`: detection scores (balanced accuracy, F1, AUROC, ...);
* `engine`: the step (forward, loss, backward of one batch) and its `StepContext`;
* `state`: `FeatureJob` (a feature to label) and `AttemptState` (its progress);
* `attempts`: one attempt for many features at once, halving the pass on out-of-memory;
* `hardlabel`: scoring a hard label, and an attempt's `LabelResult`;
* `refine`: a label's fixable training errors, and the refinement that goes after them;
* `polysemantic`: whether two labels explain a feature no single one does;
* `search`: the attempt plan, restarts, refinements, prior proposals, growing labels, the
  best attempt;
* `labeler`: `FeatureData` in, `LabelResult` out;
* `batch`: the seam between preparing features and labeling them (`LabelBatch`);
* `verify`: proposed labels scored on prepared features, accepted or not (`VerifyBatch`).
"""

from .attempts import run_attempt, step_halving_on_oom
from .engine import Batch, PassLogits, StepContext, prompt_logits, row_log_q, step
from .hardlabel import finish, hard_label_margins, score_hard_label
from .search import optimize_labels, prior_labels
from .state import AttemptState, FeatureJob

__all__ = [
    "AttemptState",
    "Batch",
    "FeatureJob",
    "PassLogits",
    "StepContext",
    "finish",
    "hard_label_margins",
    "optimize_labels",
    "prior_labels",
    "prompt_logits",
    "row_log_q",
    "run_attempt",
    "score_hard_label",
    "step",
    "step_halving_on_oom",
]
