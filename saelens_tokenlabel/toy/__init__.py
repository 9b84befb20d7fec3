"""The offline toy world (beside the descent, layer 4): a lexicon, a tiny evaluator trained on
it, planted SAE worlds and a hand-written context-reading evaluator, for tests and the demo.

Owns nothing the labeler needs; may import `records/`, `formats/` and `evaluator/`.

The toy evaluator (``data/toy_evaluator/``, built by ``scripts/train_toy_evaluator.py``) is a
2-layer Llama-shaped HookedTransformer (rotary, RMSNorm, gated SiLU MLP, grouped-query
attention) with a byte-level BPE tokenizer and the Llama-3 chat template. On the paper's rating
prompt it answers "1" exactly when the word is a member of the label's concept and "0" for
every other word, and for every other token at the label slot:

* `CONCEPTS` ("animal" ⊃ "mammal", "number" ⊃ "digit", "color", "food"): the label is one
  token, in one label slot (``LabelConfig(label_length=1)``, the default). For a feature
  active on a concept's members, the best single-token label is the concept's own token.
  `subset_feature` builds the hierarchy case: a subset's members, its siblings rare.
* `TWO_TOKEN_CONCEPTS` ("vehicle"): the label is two tokens, "ve" + "hicle"
  (`VEHICLE_PIECES`), in two consecutive label slots (``label_length=2``). Each piece alone,
  the pieces swapped or doubled, or a piece next to another token, is rated "0" for every word;
  only the exact pair says "1", on the vehicles. The evaluator's next-token distribution (the
  labeler's ``q``) favours "ve" at the first slot among the labels' first tokens, and "hicle"
  right after "ve".

Nothing is downloaded::

    from saelens_tokenlabel.toy import concept_feature, label_token_ids, load_toy_evaluator
    evaluator = load_toy_evaluator()
    data = concept_feature("vehicle")           # fires on exactly the vehicles
    label_token_ids(evaluator, "vehicle")       # the two ids of "ve", "hicle"

The context world (`toy/context.py`, names imported on first use): words such as "lamb" or
"goose" (`FAMILY`) are livestock on a farm and meat in a kitchen.

* `context_evaluator(prior={"animal": 3.0})`: a hand-written one-layer evaluator that reads
  context. "livestock" applies to a family word in farm text, "meat" in cooking text, "animal"
  in any text; its q at the label slot favours `prior`'s words. Exact: every rating is
  logit("1") - logit("0") = +-6, a soft label reads as the mixture of its concepts.
* `context_world(dir)` -> `ContextWorld`: a planted subject model, SAE and corpus whose feature
  0 fires on family words in farm text only (one family occurrence in five is in cooking
  text), feature 1 in cooking text, feature 2 on every family word.
  ``ContextWorld.examples(feature, contrasts=False)`` leaves out the same-word contrasts;
  without them the labeler finds "animal", with them "livestock".

Importing this module does no I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..records.lazy import lazy_exports
from .features import (
    all_concepts,
    concept_feature,
    label_token_ids,
    noisy_feature,
    subset_feature,
    union_feature,
)
from .lexicon import (
    ANIMALS,
    COLORS,
    CONCEPTS,
    DIGITS,
    FOODS,
    MAMMALS,
    NON_MAMMAL_ANIMALS,
    NUMBER_WORDS,
    NUMBERS,
    OBJECTS,
    SUBSETS,
    TWO_TOKEN_CONCEPTS,
    VEHICLE_PIECES,
    VEHICLES,
)

if TYPE_CHECKING:
    from ..evaluator.model import Evaluator
    from .context import ContextWorld, context_evaluator, context_world, rates, text_context

# The context world needs torch, TransformerLens and SAELens: imported on first use (PEP 562).
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(
    ("ContextWorld", "context_evaluator", "context_world", "rates", "text_context"), ".context"))

TOY_EVALUATOR_DIR: Path = Path(__file__).resolve().parent.parent / "data" / "toy_evaluator"
"""The folder holding the toy evaluator, as written by `save_local_model`."""


def load_toy_evaluator(device: str = "cpu", label_prior: dict[str, float] | None = None,
                       backend: str = "hooked") -> Evaluator:
    """The toy evaluator, in float32, wrapped in an `Evaluator` with the paper's prompt.

    `label_prior` (word -> logit bias) raises the unembedding bias of those words' tokens, so
    the next-token distribution at the label slot (the labeler's q) favours them, as a large
    LLM's prior favours a common word ("animal") over a rarer, more specific one ("mammal").
    The ratings are unchanged: they read only the "1" and "0" logits.

    ``backend="bridge"`` gives the same network as a TransformerLens 3 `TransformerBridge`
    around a Hugging Face Llama (`loading.hooked_to_hf_llama`)."""
    import torch

    from ..evaluator.loading import load_local_model
    from ..evaluator.model import Evaluator

    if not (TOY_EVALUATOR_DIR / "tokenlabel_model.json").is_file():
        raise FileNotFoundError(
            f"The toy evaluator is missing from {TOY_EVALUATOR_DIR}. Rebuild it with "
            "`python scripts/train_toy_evaluator.py` from the repository root."
        )
    model = load_local_model(TOY_EVALUATOR_DIR, device=device, dtype=torch.float32)
    for word, bias in (label_prior or {}).items():
        ids = model.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"label_prior: {word!r} is {len(ids)} tokens of the toy "
                             "evaluator; give single-token words (e.g. 'animal').")
        with torch.no_grad():
            model.b_U[ids[0]] += bias
    if backend == "bridge":
        from ..evaluator.loading import boot_bridge, hooked_to_hf_llama

        model = boot_bridge(hooked_to_hf_llama(model), model.tokenizer)
    return Evaluator(model)


__all__ = [
    "ANIMALS",
    "COLORS",
    "CONCEPTS",
    "ContextWorld",
    "DIGITS",
    "FOODS",
    "MAMMALS",
    "NON_MAMMAL_ANIMALS",
    "NUMBERS",
    "NUMBER_WORDS",
    "OBJECTS",
    "SUBSETS",
    "TOY_EVALUATOR_DIR",
    "TWO_TOKEN_CONCEPTS",
    "VEHICLES",
    "VEHICLE_PIECES",
    "all_concepts",
    "concept_feature",
    "context_evaluator",
    "context_world",
    "label_token_ids",
    "load_toy_evaluator",
    "noisy_feature",
    "rates",
    "subset_feature",
    "text_context",
    "union_feature",
]
