"""`Subject`: the model an SAE reads, the SAE, and where it reads it, carried together.

Every SAE-side stage needs all three (the activation cache, attribution, the logit lens, the
scorers), and passing them as loose ``(sae, model)`` pairs let the two swap places unnoticed.
`Subject.of` checks the hook once: the model must have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..evaluator.loading import tokenizer_of
from .hooks import HookSpec

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformers import PreTrainedTokenizerBase

    from .hooks import SubjectModel


@dataclass(frozen=True)
class Subject:
    """The subject model, the SAE that reads it, and the SAE's hook (`HookSpec`)."""

    model: SubjectModel
    """The model the SAE was trained on: a HookedTransformer or a TransformerBridge."""
    sae: SAE[Any]
    """The SAELens SAE (any architecture, g-SAEs included)."""
    hook: HookSpec
    """Where the SAE reads the model (hook name, head, how far the model must run)."""

    @classmethod
    def of(cls, model: SubjectModel, sae: SAE[Any]) -> Subject:
        """The subject of `sae` on `model`, its hook checked against the model (a missing hook
        is a `HookError` naming similar hooks)."""
        hook = HookSpec.from_sae(sae)
        hook.check(model)
        return cls(model, sae, hook)

    @property
    def d_sae(self) -> int:
        """The SAE's number of features."""
        return int(self.sae.cfg.d_sae)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The subject model's tokenizer (a one-line error when it has none)."""
        return tokenizer_of(self.model)


def require_subject(value: object, where: str) -> Subject:
    """`value` if it is a `Subject`, else a one-line TypeError saying how to make one (the
    SAE-side functions took ``(model, sae)`` pairs before)."""
    if isinstance(value, Subject):
        return value
    raise TypeError(f"{where} takes a Subject (the model, the SAE and its hook together), got "
                    f"{type(value).__name__}: pass Subject.of(model, sae) "
                    "(from saelens_tokenlabel.sae import Subject).")
