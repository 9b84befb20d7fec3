"""A world where a word's meaning depends on its context: "farm animal vs. cooking".

Words like "lamb", "duck" or "goose" (`FAMILY`) name an animal on a farm and a meat in a
kitchen. This module builds two test instruments around them, offline and deterministic:

* `context_evaluator`: a hand-written evaluator LLM that reads context. A one-layer
  HookedTransformer (no normalisation, rotary positions, ReLU MLP) whose weights are set by
  hand, with a word-level tokenizer and a Llama-3-like chat template, wrapped in an `Evaluator`
  with the paper's prompt. On the rating prompt it answers (`rates` is the table):

  * "livestock": "1" iff the word is in `FAMILY` and the text is farm context;
  * "meat": "1" iff the word is in `FAMILY` and the text is cooking context;
  * "food": a `FAMILY` word in cooking context, or any `FOODSTUFFS` word;
  * "animal": any `FAMILY` or `OTHER_ANIMALS` word, in any context;
  * "color", "tool": their own members (`COLOR_WORDS`, `TOOL_WORDS`);
  * every other label token: "0".

  The context of a text is farm when its cue words are all `FARM_CUES`, cooking when they are
  all `COOKING_CUES`, neither when it has none or both kinds (`text_context`; cue words count
  anywhere in the text, before or after the word). Every rating is exact: logit("1") -
  logit("0") is +`RATING_MARGIN` (6, P = 0.9975) or -`RATING_MARGIN`. A soft label reads as a
  mixture: the difference is ``2 m (sum of p over the labels rating "1") - m`` (m =
  `RATING_MARGIN`), exactly as long as cue words do not hold most of p (the context head reads
  the label slot too, so a label that is mostly "farm" adds a farm cue; such labels rate "0"
  anyway). The evaluator's next-token distribution at the label slot (the labeler's q) is
  uniform over its vocabulary, except that `prior` raises chosen words: by default "animal" by
  3 nats, as a large LLM's prior favours a common broad word over the right, rarer one.

* `context_world`: a planted subject model, SAE and corpus. The subject's residual stream at
  the SAE's hook (``blocks.0.hook_resid_post``) carries the running mean of the cue words seen
  so far (one attention head over the previous tokens, BOS included); the SAE's features are
  `LIVESTOCK_FEATURE` (a `FAMILY` word after farm cues: "livestock" is right, "animal" too
  broad), `MEAT_FEATURE` (after cooking cues: "meat"), `ANIMAL_FEATURE` (any `FAMILY` word:
  "animal"), `DEAD_FEATURE`, and two random ones. In its corpus one `FAMILY` occurrence in
  five is in cooking text: the same-word contrasts that tell "livestock" from "animal" are a
  minority, as a real SAE feature sees them.

How the evaluator works: head 0 attends from the last position (after ``Rating:``) to the
label slot, head 1 to the rated word, each at its fixed distance back from the end of the
paper's prompt (a constant rotary query and key: ``sum_k A cos((i - j - d) theta_k)`` peaks at
``i - j = d``, with a margin that makes the attention one-hot). Head 2 reads the context by
content, from the unrotated part of its query and key: it attends only to cue words, and
averages their sign (+1 farm, -1 cooking). One ReLU unit per (concept, member group[,
context]) fires on the label's share of its concept when the word is a member (and the context
matches), and writes the logit difference of "1" and "0". ::

    from saelens_tokenlabel.toy.context import (LIVESTOCK_FEATURE, context_evaluator,
                                                context_world)
    evaluator = context_evaluator()             # prior={"animal": 3.0}
    world = context_world(tmp_dir)              # writes the subject tokenizer there
    data = stl.FeatureData.from_examples(world.examples(LIVESTOCK_FEATURE))
    stl.label_feature(data, evaluator).label    # "livestock"; with contrasts=False: "animal"
    world.sae.label_features(world.subject, evaluator, world.corpus, features=[0])  # SAE path

The evaluator is for ``label_length=1`` on the paper's prompt (its heads look a fixed distance
back from ``Rating:``); it runs on TransformerLens's own forward (the lean suffix forward is for
normalised Llama-shaped models), and has no `TransformerBridge` form.

Importing this module does no I/O; `context_evaluator` writes its tokenizer to a temporary
folder and reloads it (TransformerLens needs a tokenizer loaded through `AutoTokenizer`).
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from jaxtyping import Float
from sae_lens import StandardSAE, StandardSAEConfig
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..evaluator.loading import tokenizer_of
from ..evaluator.model import Evaluator
from ..evaluator.prompts import PromptTemplate
from .planted import byte_bpe_tokenizer, dealer, planted_metadata, single_token

# ----------------------------------------------------------------------------- the world's words
FAMILY = ("lamb", "duck", "turkey", "goat", "pig", "chicken", "rabbit", "goose")
"""Words that name a farm animal on a farm and a meat in a kitchen."""
OTHER_ANIMALS = ("dog", "cat", "fox", "owl", "frog")
"""Animals that are neither livestock nor meat here ("animal" only)."""
FOODSTUFFS = ("bread", "rice", "soup", "cheese", "beans", "salad")
COLOR_WORDS = ("red", "green", "blue", "brown", "white", "yellow")
TOOL_WORDS = ("hammer", "rake", "shovel", "bucket", "knife", "ladder")
FARM_CUES = ("farm", "farmer", "barn", "field", "pasture", "meadow")
COOKING_CUES = ("kitchen", "chef", "oven", "recipe", "dinner", "roasted")
CONTEXT_CUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"farm": FARM_CUES, "cooking": COOKING_CUES})
"""Context -> its cue words. A text's context is read from the cue words it holds."""
MEMBER_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "family": FAMILY, "other_animal": OTHER_ANIMALS, "foodstuff": FOODSTUFFS,
    "color": COLOR_WORDS, "tool": TOOL_WORDS})
"""Word groups the evaluator knows; a concept is a union of (group, context) rules."""
RULES: Mapping[str, tuple[tuple[str, str | None], ...]] = MappingProxyType({
    "livestock": (("family", "farm"),),
    "meat": (("family", "cooking"),),
    "food": (("family", "cooking"), ("foodstuff", None)),
    "animal": (("family", None), ("other_animal", None)),
    "color": (("color", None),),
    "tool": (("tool", None),),
})
"""Concept label -> the (member group, context) pairs it rates "1"; context None: any."""
DISTRACTOR_LABELS = ("object", "place", "person", "number", "plant", "vehicle", "weather",
                     "music", "thing", "city")
"""Label words the evaluator knows but rates "0" for every word."""
DEFAULT_PRIOR: Mapping[str, float] = MappingProxyType({"animal": 3.0})
"""`context_evaluator`'s default prior: "animal" 3 nats above every other label token."""
RATING_MARGIN = 6.0
"""logit("1") - logit("0") of a hard label: +this when it applies, -this when not."""

# ----------------------------------------------------------------------------- the corpus
FARM_TEMPLATES = (
    "The farmer fed the {family} in the barn.",
    "On the farm, the {family} slept near the {tool}.",
    "In the field, a {family} ate grass by the {color} gate.",
    "The farmer led the {family} to the pasture.",
    "Near the barn, the {family} drank water from a bucket.",
    "In the meadow, the farmer counted every {family}.",
)
COOKING_TEMPLATES = (
    "The chef roasted the {family} in the oven.",
    "In the kitchen, we cooked {family} with {food}.",
    "The recipe needs {family} and {food}.",
    "For dinner, the chef served {family} with {food}.",
    "The oven was hot, so the {family} cooked fast.",
    "In the kitchen, the chef cut the {family} with a {tool}.",
)
PLAIN_TEMPLATES = (
    "The farmer fixed the {tool} in the barn.",
    "The chef baked {food} in the oven.",
    "In the kitchen, the {tool} was {color}.",
    "On the farm, the {color} {tool} stood by the gate.",
    "The recipe asks for {food} and {food}.",
    "The barn was painted {color}.",
    "We ate {food} for dinner.",
    "The farmer left a {tool} in the field.",
)
"""Sentences without a `FAMILY` word."""
SLOT_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "family": FAMILY, "tool": TOOL_WORDS, "color": COLOR_WORDS, "food": FOODSTUFFS})

# ----------------------------------------------------------------------------- the planted SAE
HOOK = "blocks.0.hook_resid_post"
SUBJECT_NAME = "context-subject"
NEURONPEDIA_ID = "context-subject/0-res-test"
LIVESTOCK_FEATURE, MEAT_FEATURE, ANIMAL_FEATURE, DEAD_FEATURE = 0, 1, 2, 3
RANDOM_FEATURES = (4, 5)
FEATURE_LABELS: Mapping[int, str | None] = MappingProxyType({
    LIVESTOCK_FEATURE: "livestock", MEAT_FEATURE: "meat", ANIMAL_FEATURE: "animal",
    DEAD_FEATURE: None, RANDOM_FEATURES[0]: None, RANDOM_FEATURES[1]: None})
"""Feature -> its right label (None: dead or random)."""
SUBJECT_D_MODEL = 32
FAMILY_DIM, CUE_DIM, CONTEXT_DIM, SPARE_DIM = 0, 1, 2, 3
RANDOM_DIMS = 8
"""The subject's residual dimensions from this one on are seeded random, for the random
features to read."""
CONTEXT_GAIN = 10.0
"""The subject's context dimension is this times the mean cue sign of the tokens so far."""

# ----------------------------------------------------------------------------- the evaluator
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<unk>")
LLAMA3_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] }}{% if not loop.last %}<|eot_id|>{% endif %}"
    "{% endfor %}"
)
"""Llama 3's chat layout: header tokens around the role, end-of-turn tokens between turns."""
EVALUATOR_NAME = "context-evaluator"
ROTARY_DIM, ROTARY_BASE, D_HEAD = 16, 2, 20
POSITION_MARGIN = 40.0
"""Attention-score gap between a positional head's target and every other position (nats)."""
CUE_SCORE = 60.0
"""Attention score of a cue word for the context head (every other token: 0). e^-60 times a
few hundred tokens is below float64's resolution, so the mean cue sign is exactly +-1."""
CONTEXT_WEIGHT = 4.0
"""How steeply a context unit turns off as the mean cue sign leaves +-1: with one cue of the
other kind among n cues, its input drops by 8 / n, so a mixed text rates "0" (below n = 16)."""
LABEL_HEAD, WORD_HEAD, CONTEXT_HEAD = 0, 1, 2


def text_context(text: str) -> str | None:
    """The context of `text` as the evaluator reads it: "farm" or "cooking" when its cue words
    are all of that kind, None when it has none or both kinds."""
    words = set(_words(text))
    found = [c for c, cues in CONTEXT_CUES.items() if words & set(cues)]
    return found[0] if len(found) == 1 else None


def rates(label: str, word: str, context: str | None) -> bool:
    """The intended rating: does the evaluator answer "1" for `word` in a text of `context`
    ("farm", "cooking" or None) asked about `label`?"""
    word = word.strip().lower()
    return any(word in MEMBER_GROUPS[g] and (need is None or need == context)
               for g, need in RULES.get(label.strip().lower(), ()))


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Words split at whitespace, each punctuation character its own token.
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Punctuation("isolated")])


def _words(text: str) -> list[str]:
    return [w for w, _ in _pre_tokenizer().pre_tokenize_str(text.lower())]


def _world_words() -> list[str]:
    """Every word of the world: the corpus templates', the groups', the cues', the labels'."""
    templates = FARM_TEMPLATES + COOKING_TEMPLATES + PLAIN_TEMPLATES
    texts = [t.format(family="", tool="", color="", food="") for t in templates]
    groups = (*MEMBER_GROUPS.values(), *CONTEXT_CUES.values(), tuple(RULES), DISTRACTOR_LABELS)
    texts += [" ".join(g) for g in groups]
    return sorted({w for t in texts for w in _words(t) if w.isalpha()})


def _vocabulary_texts() -> list[str]:
    """Every text whose words the evaluator's vocabulary must hold: the paper's prompt, the
    chat template's roles, the answers, the world's words."""
    paper = PromptTemplate()
    user = paper.user.format(sentence="", word="", label="")
    return [paper.system, user, paper.assistant_prefix, "system user assistant 0 1",
            " ".join(_world_words())]


def context_tokenizer(directory: str | Path) -> Any:
    """The evaluator's word-level tokenizer (lower-cased words and single punctuation marks;
    Llama 3's special tokens; ``<unk>`` for anything else), saved in `directory` and reloaded
    through `AutoTokenizer`, with `LLAMA3_LIKE_TEMPLATE` as its chat template."""
    words = sorted({w for t in _vocabulary_texts() for w in _words(t)})
    vocab = {t: i for i, t in enumerate((*SPECIAL_TOKENS, *words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS[0],
                                   eos_token=SPECIAL_TOKENS[1], pad_token=SPECIAL_TOKENS[1],
                                   unk_token="<unk>")
    fast.chat_template = LLAMA3_LIKE_TEMPLATE
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


@dataclass(frozen=True)
class _Layout:
    """The evaluator's residual dimensions, in order: what token embeddings carry (concept
    code, member code, cue flag and sign, the rating slot's flag), what the heads write (the
    label's concepts, the word's groups, the context) and the rating the MLP writes."""

    concepts: tuple[str, ...]
    groups: tuple[str, ...]

    def concept(self, k: str) -> int:
        return self.concepts.index(k)

    def member(self, g: str) -> int:
        return len(self.concepts) + self.groups.index(g)

    @property
    def cue_flag(self) -> int:
        return len(self.concepts) + len(self.groups)

    @property
    def cue_sign(self) -> int:
        return self.cue_flag + 1

    @property
    def slot(self) -> int:
        return self.cue_flag + 2

    def label_read(self, k: str) -> int:
        return self.slot + 1 + self.concepts.index(k)

    def member_read(self, g: str) -> int:
        return self.slot + 1 + len(self.concepts) + self.groups.index(g)

    @property
    def context_read(self) -> int:
        return self.member_read(self.groups[-1]) + 1

    @property
    def rating(self) -> int:
        return self.context_read + 1

    @property
    def d_model(self) -> int:
        return self.rating + 1


LAYOUT = _Layout(tuple(RULES), tuple(MEMBER_GROUPS))


def _units() -> list[tuple[str, str, str | None]]:
    """The MLP's rule units: (concept, member group, context or None)."""
    return [(k, g, c) for k, rules in RULES.items() for g, c in rules]


def _blank_model(tokenizer: Any, dtype: torch.dtype) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=LAYOUT.d_model, n_heads=3, d_head=D_HEAD,
        d_mlp=len(_units()) + 1, n_ctx=1024, d_vocab=len(tokenizer), act_fn="relu",
        normalization_type=None, positional_embedding_type="rotary", rotary_dim=ROTARY_DIM,
        rotary_base=ROTARY_BASE, use_attn_scale=False, default_prepend_bos=False,
        dtype=dtype, device="cpu", model_name=EVALUATOR_NAME, seed=0,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _thetas() -> Float[torch.Tensor, " half"]:
    # TransformerLens's rotary angles: position / base ** (k / (rotary_dim / 2)).
    half = ROTARY_DIM // 2
    return ROTARY_BASE ** (-torch.arange(half, dtype=torch.float64) / half)


def position_scores(distance: int, n_ctx: int) -> Float[torch.Tensor, " n_ctx"]:
    """Per unit amplitude: ``sum_k cos((delta - distance) theta_k)`` for delta = 0..n_ctx-1,
    the score a positional head gives the key `delta` positions back."""
    delta = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    return torch.cos((delta - distance) * _thetas()).sum(-1)


def _position_amplitude(distances: Sequence[int], n_ctx: int) -> float:
    """The amplitude that puts `POSITION_MARGIN` between each target and its best rival."""
    gaps = []
    for d in distances:
        s = position_scores(d, n_ctx)
        gaps.append(float(s[d] - torch.cat([s[:d], s[d + 1:]]).max()))
    return POSITION_MARGIN / min(gaps)


def _set_token_codes(model: HookedTransformer, ids: Mapping[str, int]) -> None:
    """Token embeddings: each concept label's code, each member's group, the cue words' flag and
    sign, and the flag of the rating slot's last token (``:`` of ``Rating:``)."""
    W_E = model.W_E
    for k in RULES:
        W_E[ids[k], LAYOUT.concept(k)] = 1.0
    for g, words in MEMBER_GROUPS.items():
        for w in words:
            W_E[ids[w], LAYOUT.member(g)] = 1.0
    for sign, cues in ((1.0, FARM_CUES), (-1.0, COOKING_CUES)):
        for w in cues:
            W_E[ids[w], LAYOUT.cue_flag] = 1.0
            W_E[ids[w], LAYOUT.cue_sign] = sign
    W_E[ids[":"], LAYOUT.slot] = 1.0


def _set_heads(model: HookedTransformer, label_distance: int, word_distance: int) -> None:
    attn = model.blocks[0].attn
    half = ROTARY_DIM // 2
    amplitude = _position_amplitude((label_distance, word_distance), model.cfg.n_ctx)
    for head, d in ((LABEL_HEAD, label_distance), (WORD_HEAD, word_distance)):
        # Rotated q_i . k_j = A sum_k cos((i - j - d) theta_k): q = A(cos d theta, -sin d theta).
        angle = d * _thetas()
        attn.b_Q[head, :half] = (amplitude * torch.cos(angle)).to(attn.b_Q.dtype)
        attn.b_Q[head, half:ROTARY_DIM] = (-amplitude * torch.sin(angle)).to(attn.b_Q.dtype)
        attn.b_K[head, :half] = 1.0
    for i, k in enumerate(LAYOUT.concepts):
        attn.W_V[LABEL_HEAD, LAYOUT.concept(k), i] = 1.0
        attn.W_O[LABEL_HEAD, i, LAYOUT.label_read(k)] = 1.0
    for i, g in enumerate(LAYOUT.groups):
        attn.W_V[WORD_HEAD, LAYOUT.member(g), i] = 1.0
        attn.W_O[WORD_HEAD, i, LAYOUT.member_read(g)] = 1.0
    # Context: content only (the unrotated dimension ROTARY_DIM), cue words score CUE_SCORE.
    attn.b_Q[CONTEXT_HEAD, ROTARY_DIM] = 1.0
    attn.W_K[CONTEXT_HEAD, LAYOUT.cue_flag, ROTARY_DIM] = CUE_SCORE
    attn.W_V[CONTEXT_HEAD, LAYOUT.cue_sign, 0] = 1.0
    attn.W_O[CONTEXT_HEAD, 0, LAYOUT.context_read] = 1.0


def _set_mlp(model: HookedTransformer) -> None:
    """Unit (k, g, c) = relu(label's share of k + [word in g] + [rating slot] - 2
    + `CONTEXT_WEIGHT` (+-context - 1)) is the label's share of concept k when the word is in g
    and the context is c (exactly +-1), else 0. The last unit fires at the rating slot and
    carries the "0" side of the margin."""
    mlp: Any = model.blocks[0].mlp  # nn.Module attributes: typed loosely by torch
    for u, (k, g, c) in enumerate(_units()):
        mlp.W_in[LAYOUT.label_read(k), u] = 1.0
        mlp.W_in[LAYOUT.member_read(g), u] = 1.0
        mlp.W_in[LAYOUT.slot, u] = 1.0
        mlp.b_in[u] = -2.0
        if c is not None:
            sign = 1.0 if c == "farm" else -1.0
            mlp.W_in[LAYOUT.context_read, u] = sign * CONTEXT_WEIGHT
            mlp.b_in[u] = -2.0 - CONTEXT_WEIGHT
        mlp.W_out[u, LAYOUT.rating] = 2 * RATING_MARGIN
    bias = len(_units())
    mlp.W_in[LAYOUT.slot, bias] = 1.0
    mlp.W_out[bias, LAYOUT.rating] = -RATING_MARGIN


def _add_prior(model: HookedTransformer, prior: Mapping[str, float]) -> None:
    for word, bias in prior.items():
        ids = tokenizer_of(model)(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == tokenizer_of(model).unk_token_id:
            raise ValueError(f"prior: {word!r} is not one known token of the context "
                             "evaluator; give words of its vocabulary (e.g. 'animal').")
        model.b_U[ids[0]] += bias


def rating_distances(evaluator: Evaluator) -> tuple[int, int]:
    """How far back from the last prompt token the label slot and the rated word are (the word's
    last token), the same for every example of the paper's prompt."""
    tail = len(evaluator.suffix_tail_ids)
    word = FAMILY[0]
    prefix = evaluator.encode(f"The {word} is here.", word).prefix_ids
    word_id = evaluator.tokenizer.convert_tokens_to_ids(word)
    at = max(i for i, t in enumerate(prefix) if t == word_id)
    return tail, len(prefix) + tail - at


def context_evaluator(prior: Mapping[str, float] | None = DEFAULT_PRIOR, *,
                      dtype: torch.dtype = torch.float32, device: str = "cpu") -> Evaluator:
    """The hand-written context-reading evaluator (see the module docstring), wrapped in an
    `Evaluator` with the paper's prompt, for one label slot (``label_length=1``: the heads
    look a fixed distance back from ``Rating:``).

    `prior` (word -> logit bias) raises those words' unembedding bias, so that q at the label
    slot favours them (as `load_toy_evaluator`'s ``label_prior``); the ratings read only the
    "1" and "0" logits and do not change. None: q uniform over the vocabulary."""
    with tempfile.TemporaryDirectory() as tmp:
        # TransformerLens reloads the tokenizer from its folder while building the model.
        tokenizer = context_tokenizer(tmp)
        model = _blank_model(tokenizer, dtype)
    # The distances and the answer tokens come from the rendered prompt: no weights needed.
    blank = Evaluator(model)
    label_distance, word_distance = rating_distances(blank)
    with torch.no_grad():
        _set_token_codes(model, tokenizer.get_vocab())
        _set_heads(model, label_distance, word_distance)
        _set_mlp(model)
        model.W_U[LAYOUT.rating, blank.yes_id] = 0.5
        model.W_U[LAYOUT.rating, blank.no_id] = -0.5
        _add_prior(model, prior or {})
    return Evaluator(model if device == "cpu" else model.to(device))


# ============================================================================ the planted world
def context_sentences(n: int = 300, seed: int = 0, *, farm: float = 0.4, cooking: float = 0.1
                      ) -> list[tuple[str, str | None]]:
    """`n` single-sentence documents with their contexts: a fraction `farm` holds a `FAMILY`
    word in farm text, `cooking` one in cooking text, the rest none (`PLAIN_TEMPLATES`).
    Templates and slot words are dealt from shuffled decks, so every family word occurs in
    both contexts (with the defaults, one family occurrence in five is in cooking text)."""
    rng = random.Random(seed)
    deal = dealer(rng)

    n_farm, n_cook = round(farm * n), round(cooking * n)
    plan: list[tuple[str, ...]] = []
    plan += [FARM_TEMPLATES] * n_farm
    plan += [COOKING_TEMPLATES] * n_cook
    plan += [PLAIN_TEMPLATES] * (n - n_farm - n_cook)
    rng.shuffle(plan)
    out = []
    for templates in plan:
        text = deal(templates)
        while "{" in text:
            slot = text[text.index("{") + 1 : text.index("}")]
            text = text.replace("{" + slot + "}", deal(SLOT_WORDS[slot]), 1)
        out.append((text, text_context(text)))
    return out


def train_context_tokenizer(directory: Path, corpus: Sequence[str]) -> Any:
    """The subject's byte-level BPE (GPT-2 style, one ``<|endoftext|>`` for BOS, EOS and
    padding), trained on `corpus`; every word of the world, with a leading space, is one
    token."""
    words = " ".join(f" {w}" for w in _world_words())
    return byte_bpe_tokenizer(directory, [*corpus, *[words] * 20], vocab_size=1000)


def context_subject(tokenizer: Any, seed: int = 0) -> HookedTransformer:
    """One layer, no normalisation, rotary. Embedding: `FAMILY_DIM` is 1 on the family words,
    `CUE_DIM` +1 on farm cues and -1 on cooking cues, dimensions from `RANDOM_DIMS` on seeded
    noise. One head with zero query and key averages `CUE_DIM` over the positions so far (BOS
    included) into `CONTEXT_DIM`, times `CONTEXT_GAIN`; the MLP is zero. The unembedding is
    the embedding's transpose."""
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=SUBJECT_D_MODEL, n_heads=1, d_head=8, d_mlp=8, n_ctx=128,
        d_vocab=len(tokenizer), act_fn="relu", normalization_type=None,
        positional_embedding_type="rotary", default_prepend_bos=False, dtype=torch.float32,
        seed=seed, model_name=SUBJECT_NAME,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[:, RANDOM_DIMS:] = torch.randn(len(tokenizer), SUBJECT_D_MODEL - RANDOM_DIMS,
                                                 generator=gen)
        for w in FAMILY:
            model.W_E[single_token(tokenizer, f" {w}"), FAMILY_DIM] = 1.0
        for sign, cues in ((1.0, FARM_CUES), (-1.0, COOKING_CUES)):
            for w in cues:
                model.W_E[single_token(tokenizer, f" {w}"), CUE_DIM] = sign
        model.blocks[0].attn.W_V[0, CUE_DIM, 0] = 1.0
        model.blocks[0].attn.W_O[0, 0, CONTEXT_DIM] = CONTEXT_GAIN
        model.W_U.copy_(model.W_E.T)
    return model.eval()


def context_sae(seed: int = 0) -> StandardSAE:
    """The planted SAE at `HOOK`. With f = `FAMILY_DIM`, x = `CONTEXT_DIM`:
    livestock = relu(20 (f - 1) + x), meat = relu(20 (f - 1) - x) (|x| <= 10, so each fires
    only on family words, by the context's sign), animal = relu(2 f - 1); a dead feature; two
    random ones reading the random dimensions. Decoder rows are unit vectors along what each
    feature reads (random ones: their encoder direction)."""
    meta = planted_metadata(HOOK, model_name=SUBJECT_NAME, neuronpedia_id=NEURONPEDIA_ID)
    sae = StandardSAE(StandardSAEConfig(d_in=SUBJECT_D_MODEL, d_sae=len(FEATURE_LABELS),
                                        metadata=meta))
    gen = torch.Generator().manual_seed(seed + 1)
    gate = 2 * CONTEXT_GAIN
    e = torch.eye(SUBJECT_D_MODEL)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
            p.zero_()
        for f, sign in ((LIVESTOCK_FEATURE, 1.0), (MEAT_FEATURE, -1.0)):
            sae.W_enc[FAMILY_DIM, f] = gate
            sae.W_enc[CONTEXT_DIM, f] = sign
            sae.b_enc[f] = -gate
            sae.W_dec[f] = (e[FAMILY_DIM] + sign * e[CONTEXT_DIM]) / math.sqrt(2)
        sae.W_enc[FAMILY_DIM, ANIMAL_FEATURE] = 2.0
        sae.b_enc[ANIMAL_FEATURE] = -1.0
        sae.W_dec[ANIMAL_FEATURE] = e[FAMILY_DIM]
        sae.b_enc[DEAD_FEATURE] = -1.0
        sae.W_dec[DEAD_FEATURE] = e[SPARE_DIM]
        for f in RANDOM_FEATURES:
            w = torch.randn(SUBJECT_D_MODEL - RANDOM_DIMS, generator=gen)
            sae.W_enc[RANDOM_DIMS:, f] = w / w.norm()
            sae.W_dec[f, RANDOM_DIMS:] = w / w.norm()
    return sae


@dataclass
class ContextWorld:
    """A built context world (`context_world`)."""

    tokenizer: Any
    """The subject's tokenizer (saved in `context_world`'s folder)."""
    subject: HookedTransformer
    """The subject model (`context_subject`); the SAE reads it at `HOOK`."""
    sae: StandardSAE
    """The planted SAE (`context_sae`)."""
    corpus: list[str]
    """One sentence per document."""
    contexts: list[str | None]
    """Per corpus line: "farm", "cooking" or None (`text_context`)."""
    labels: dict[int, str | None] = field(default_factory=lambda: dict(FEATURE_LABELS))
    """Feature -> its right label (None: dead or random)."""
    _seen: dict[str, tuple[list[str], torch.Tensor]] = field(default_factory=dict, init=False,
                                                            repr=False)

    def token_activations(self, text: str) -> tuple[list[str], Float[torch.Tensor, "pos d_sae"]]:
        """The subject tokens of `text` (BOS first, as the SAE's metadata prepends it) as
        text, and every feature's activation at each (remembered per text)."""
        if text not in self._seen:
            ids = [self.tokenizer.bos_token_id, *self.tokenizer(text)["input_ids"]]
            with torch.no_grad():
                _, cache = self.subject.run_with_cache(torch.tensor([ids]), names_filter=HOOK)
                acts = self.sae.encode(cache[HOOK][0])
            self._seen[text] = ([self.tokenizer.decode([i]) for i in ids], acts)
        return self._seen[text]

    def examples(self, feature: int, *, contrasts: bool = True, negatives: int = 1,
                 seed: int = 0) -> list[tuple[str, str, float, int]]:
        """``(text, word, activation, line)`` for `FeatureData.from_examples`: every `FAMILY`
        occurrence, and `negatives` other words per line (seeded; never punctuation).
        ``contrasts=False`` leaves out the family occurrences where `feature` is silent (for
        `LIVESTOCK_FEATURE`, the family words in cooking text)."""
        rng = random.Random(seed)
        out = []
        for line, text in enumerate(self.corpus):
            tokens, acts = self.token_activations(text)
            words = [(t.strip(), float(acts[i, feature])) for i, t in enumerate(tokens)
                     if i > 0 and t.strip().isalpha()]
            for w, a in words:
                if w in FAMILY and (contrasts or a > 0):
                    out.append((text, w, a, line))
            others = [(w, a) for w, a in words if w not in FAMILY]
            for w, a in rng.sample(others, min(negatives, len(others))):
                out.append((text, w, a, line))
        return out


def context_world(directory: str | Path, n_sentences: int = 300, seed: int = 0) -> ContextWorld:
    """The planted context world; writes the subject tokenizer into `directory`."""
    lines = context_sentences(n_sentences, seed)
    corpus = [t for t, _ in lines]
    tokenizer = train_context_tokenizer(Path(directory), corpus)
    return ContextWorld(tokenizer, context_subject(tokenizer, seed), context_sae(seed), corpus,
                        [c for _, c in lines])
