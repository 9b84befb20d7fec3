"""A planted SAE world, built offline in seconds: a GPT-2-like subject tokenizer trained on the
toy lexicon, a tiny subject model whose embedding marks chosen tokens, and a hand-built SAE
whose features fire on exactly those tokens (feature 0: animal words, 1: digits, 2: never,
3: two Chinese characters; 4..7: random directions).

The decoder is seeded. Given the subject model (``planted_sae(model=...)``, as the demo does,
with a tokenizer that has the concept words as tokens: ``train_subject_tokenizer(dir,
slots=LABEL_SLOTS)``), each concept feature's decoder row writes its concept (`WRITES`: the
animal and the Chinese feature write " animal", the digit feature " number"): its logit lens
promotes that word first, and added at the hook it makes the model say it. Every other row
is a random direction.

The tests use it, and so does ``tutorials/02_label_an_sae.ipynb`` in offline mode, where it
stands in for GPT-2 small and a pretrained SAELens SAE::

    from saelens_tokenlabel.toy.planted import (planted_sae, subject_model, toy_sentences,
                                                train_subject_tokenizer)
    tokenizer = train_subject_tokenizer(tmp_dir)
    model, sae = subject_model(tokenizer), planted_sae()

Importing this module does no I/O; `train_subject_tokenizer` writes to the folder it is given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..evaluator.loading import tokenizer_of
from .lexicon import ANIMALS, COLORS, CONCEPTS, DIGITS, FOODS, OBJECTS

ENDOFTEXT = "<|endoftext|>"
T = TypeVar("T")
HOOK = "blocks.0.hook_resid_pre"
MODEL_NAME = "tiny-subject"
NEURONPEDIA_ID = "tiny-subject/0-res-test"
ANIMAL_FEATURE, DIGIT_FEATURE, DEAD_FEATURE, CHINESE_FEATURE = 0, 1, 2, 3
D_MODEL, D_SAE = 32, 8
# Chinese characters the Chinese feature fires on (on each one's last byte token).
CHINESE_ACTIVE = ("猫", "狗")
CHINESE_SENTENCES = ("我的猫很可爱", "他的狗在公园里", "我们喜欢猫和狗", "今天天气很好",
                     "他一到，我们就开始", "她在看书")

TEMPLATES = (
    "The {animal} chased the {animal}.",
    "A {animal} slept under the {object}.",
    "The {animal} ate the {food}.",
    "I saw {number} {animal} near the {object}.",
    "A {color} {object} stopped by the {object}.",
    "I ate {number} {food}.",
    "She bought {number} {color} {object}.",
    "My {animal} likes {food}.",
    "There are {number} {object} on the {object}.",
    "The {food} was {color}.",
)
SLOTS = {"animal": ANIMALS, "number": DIGITS, "food": FOODS, "color": COLORS,
         "object": OBJECTS}
LABEL_SLOTS = {**SLOTS, "label": tuple(CONCEPTS)}
"""`SLOTS` and the toy evaluator's concept words: a tokenizer trained on them has every label
the toy evaluator can give as one subject token (for the output side and steering)."""
WRITES = {ANIMAL_FEATURE: "animal", DIGIT_FEATURE: "number", CHINESE_FEATURE: "animal"}
"""The word each concept feature's decoder row writes (`planted_sae` with a model): 猫 and 狗
are animals, and the toy corpus writes its numbers as digits."""


def dealer(rng: random.Random) -> Callable[[Sequence[T]], T]:
    """Draws from a list as from a shuffled deck (one per list), reshuffled when empty: every
    item is dealt equally often, to within one."""
    decks: dict[tuple[Any, ...], list[Any]] = {}

    def deal(items: Sequence[T]) -> T:
        deck = decks.setdefault(tuple(items), [])
        if not deck:
            deck.extend(items)
            rng.shuffle(deck)
        return deck.pop()

    return deal


def toy_sentences(n: int, seed: int = 0, *, slots: Mapping[str, Sequence[str]] = SLOTS,
                  balanced: bool = False) -> list[str]:
    """Sentences of the toy evaluator's world; numbers are digits only, unless `slots`
    (slot -> words, e.g. ``{**SLOTS, "number": NUMBERS}``) says otherwise.

    `balanced`: templates and each slot's words are dealt from shuffled decks rather than drawn
    at random, so each template, and each word of a slot, appears equally often (to within
    one): with the default slots, every word is in at least ``n // 80`` sentences."""
    rng = random.Random(seed)
    pick = dealer(rng) if balanced else rng.choice
    out = []
    for _ in range(n):
        t = pick(TEMPLATES)
        while "{" in t:
            slot = t[t.index("{") + 1 : t.index("}")]
            t = t.replace("{" + slot + "}", pick(slots[slot]), 1)
        out.append(t)
    return out


def train_subject_tokenizer(directory: Path, *, slots: Mapping[str, Sequence[str]] = SLOTS
                            ) -> PreTrainedTokenizerBase:
    """Byte-level BPE (GPT-2 style: spaces belong to the next word, one <|endoftext|> for
    BOS/EOS/pad). No Chinese in training, so Chinese characters stay byte tokens. Every word of
    `slots` (see `toy_sentences`), with and without a leading space, is one token."""
    words = [f" {w}" for ws in slots.values() for w in ws] + [w for ws in slots.values()
                                                               for w in ws]
    corpus = toy_sentences(400, seed=123, slots=slots) + [" ".join(words)] * 20
    return byte_bpe_tokenizer(directory, corpus, vocab_size=800)


def byte_bpe_tokenizer(directory: Path, corpus: Sequence[str], vocab_size: int
                       ) -> PreTrainedTokenizerBase:
    """A byte-level BPE (GPT-2 style: spaces belong to the next word, one <|endoftext|> for
    BOS/EOS/pad) trained on `corpus`, saved into `directory` and loaded back from it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(corpus), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT,
                                   eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{text!r} is not one subject token: {ids}"
    return ids[0]


def planted_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[int, list[int]]:
    """feature -> the subject token ids it fires on."""
    animals = [single_token(tokenizer, f" {w}") for w in ANIMALS]
    digits = [single_token(tokenizer, f" {d}") for d in DIGITS]
    chinese = []
    for ch in CHINESE_ACTIVE:
        ids = tokenizer(ch, add_special_tokens=False)["input_ids"]
        assert len(ids) == 3, f"{ch!r} should be three byte tokens, got {ids}"
        chinese.append(ids[-1])
    return {ANIMAL_FEATURE: animals, DIGIT_FEATURE: digits, CHINESE_FEATURE: chinese}


def subject_model(tokenizer: PreTrainedTokenizerBase, n_layers: int = 2, seed: int = 0, *,
                  d_model: int = D_MODEL,
                  marks: Mapping[int, Sequence[int]] | None = None) -> HookedTransformer:
    """Llama-shaped (rotary, so ``blocks.0.hook_resid_pre`` is the token embedding alone).
    Dimension f of the embedding marks the tokens of planted feature f, with graded values.

    `marks` (dimension -> token ids; default `planted_tokens`): dimensions 0 to ``max(marks)``
    are zero except at the marked tokens, 1.0 + 0.25 (i % 4) at the i-th; the others keep
    their small random initialisation. `d_model` must exceed ``max(marks)``."""
    marks = planted_tokens(tokenizer) if marks is None else marks
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, d_head=8, n_heads=4, n_key_value_heads=2, d_mlp=64,
        n_ctx=256, d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, default_prepend_bos=False,
        dtype=torch.float32, seed=seed, model_name=MODEL_NAME,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    with torch.no_grad():
        model.W_E[:, : max(marks, default=-1) + 1] = 0.0
        for f, ids in marks.items():
            for i, t in enumerate(ids):
                model.W_E[t, f] = 1.0 + 0.25 * (i % 4)
    return model.eval()


def planted_metadata(hook: str | None = HOOK, **metadata: Any) -> SAEMetadata:
    """The planted SAEs' metadata: `hook`, the tiny subject, 32-token contexts with BOS, a
    Neuronpedia id; keyword arguments override or add fields."""
    meta = dict(hook_name=hook, model_name=MODEL_NAME, context_size=32, prepend_bos=True,
                neuronpedia_id=NEURONPEDIA_ID)
    meta.update(metadata)
    return SAEMetadata(**meta)


def planted_sae(hook: str = HOOK, *, model: HookedTransformer | None = None,
                **metadata: Any) -> StandardSAE:
    """Feature f < 4 reads embedding dimension f: relu(2 x_f - 0.5), so it fires exactly on
    its planted tokens (1.5 to 3.0). Feature 2 is dead. Features 4.. read random directions.

    Decoder rows are unit vectors, seeded: random, except that with the subject `model` each
    concept feature's row writes its word (`WRITES`, `concept_row`). Activations never depend
    on the decoder (b_dec is 0), so every SAE this builds fires alike."""
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=D_SAE,
                                        metadata=planted_metadata(hook, **metadata)))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        for f in (ANIMAL_FEATURE, DIGIT_FEATURE, CHINESE_FEATURE):
            sae.W_enc[f, f] = 2.0
            sae.b_enc[f] = -0.5
        sae.b_enc[DEAD_FEATURE] = -1.0
        sae.W_enc[4:, 4:] = torch.randn(D_MODEL - 4, D_SAE - 4, generator=gen)
        rows = torch.randn(D_SAE, D_MODEL, generator=torch.Generator().manual_seed(2))
        sae.W_dec.copy_(rows / rows.norm(dim=1, keepdim=True))
    if model is not None:
        written = {w: concept_row(model, hook, w) for w in sorted(set(WRITES.values()))}
        with torch.no_grad():
            for f, word in WRITES.items():
                sae.W_dec[f] = written[word]
    return sae


def concept_row(model: HookedTransformer, hook: str, word: str, steps: int = 100
                ) -> torch.Tensor:
    """A unit direction at `hook` that writes `word` (one subject token, with its leading
    space): seeded Adam steps raise the word's log-probability when the direction, at 0.5,
    1 and 2 times the hook's mean activation norm, is added to neutral toy sentences (read at
    their last token), and its rank in the direction's logit lens. Rounded to 4 decimals, so
    that the float noise of another thread count does not change the SAE."""
    t = single_token(tokenizer_of(model), " " + word)
    tokens, mask = _sentences(model, toy_sentences(16, seed=7))
    last = mask.sum(1) - 1
    with torch.no_grad():
        acts: dict[str, torch.Tensor] = {}
        model.run_with_hooks(tokens, attention_mask=mask, return_type=None,
                             fwd_hooks=[(hook, lambda a, hook: acts.update(x=a))])
        norm = float(acts["x"][:, 1:].norm(dim=-1)[mask[:, 1:].bool()].mean())
    scales = torch.tensor([0.5, 1.0, 2.0]) * norm
    rows, m = tokens.repeat(len(scales), 1), mask.repeat(len(scales), 1)
    at = (torch.arange(len(rows)), last.repeat(len(scales)))
    n_real = len(tokenizer_of(model))
    gain: torch.Tensor = model.ln_final.w  # type: ignore[assignment]  # RMSNorm's weight
    lens = (gain.detach()[:, None] * model.W_U.detach())[:, :n_real]
    v = torch.randn(D_MODEL, generator=torch.Generator().manual_seed(100 + t))
    v.requires_grad_(True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(steps):
        u = v / v.norm()
        add = (scales[:, None] * u).repeat_interleave(len(tokens), 0)[:, None]
        logits = model.run_with_hooks(rows, attention_mask=m,
                                      fwd_hooks=[(hook, lambda a, hook, add=add: a + add)])
        said = torch.log_softmax(logits[at], -1)[:, t].mean()
        ranked = torch.log_softmax(20.0 * (u @ lens), -1)[t]
        # autograd.grad, not backward: the model's weights get no gradient.
        (v.grad,) = torch.autograd.grad(-said - ranked, v)
        opt.step()
    with torch.no_grad():
        u = torch.round(v / v.norm() * 1e4) / 1e4
        return u / u.norm()


def _sentences(model: HookedTransformer, texts: Sequence[str]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """`texts` with BOS, right-padded, and the mask of their tokens."""
    tok = tokenizer_of(model)
    seqs = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"]] for t in texts]
    tokens = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, ids in enumerate(seqs):
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    return tokens, mask


def expected_activations(model: HookedTransformer, sae: StandardSAE, contexts: dict[int, list[int]],
                         features: list[int]) -> dict[tuple[int, int, int], float]:
    """(context, position, feature) -> activation, computed directly from the embedding."""
    out: dict[tuple[int, int, int], float] = {}
    for c, ids in contexts.items():
        with torch.no_grad():
            acts = torch.relu(model.W_E[torch.tensor(ids)] @ sae.W_enc + sae.b_enc)
        for p in range(len(ids)):
            for f in features:
                v = float(acts[p, f])
                if v != 0:
                    out[(c, p, f)] = v
    return out
