#!/usr/bin/env python
"""Train the toy evaluator shipped in ``saelens_tokenlabel/data/toy_evaluator/``.

The toy evaluator is a tiny Llama-shaped HookedTransformer (rotary, RMSNorm, gated SiLU MLP,
grouped-query attention) with a byte-level BPE tokenizer and a Llama-3-like chat template. It
is trained, offline and from scratch, on the paper's rating prompt (rendered by `Evaluator`, so
the token ids are exactly those the labeler uses) to answer "is WORD an example of the concept
LABEL?" for the toy lexicon (`saelens_tokenlabel.toy.lexicon`):

* a single-token concept label ("animal", "mammal", "number", "digit", "color", "food") in the
  one label slot gets "1" exactly on its member words (mammals are animals too: "cat" is "1"
  for both "animal" and "mammal"; "7" is "1" for both "number" and "digit");
* the two-token label "vehicle" = "ve" + "hicle" (`TWO_TOKEN_CONCEPTS`), written in two
  consecutive label slots as ``LabelConfig(label_length=2)`` fills them, gets "1" exactly on
  the vehicles. The tokenizer corpus holds the pieces but never the whole word, so BPE keeps
  them apart (checked). Anything else in two slots is "0" for every word: each piece with a
  distractor or another label, the pieces swapped or doubled, labels and distractors;
* any other token at the label slot (a *distractor*: " animal" with a space, "anim", "cat",
  "ve", "hicle", ...) gets "0" for every word, so the label cannot be ignored and the only
  labels that separate a concept's members from the rest are the concept's own label tokens;
* "yes" is as likely for every label a priori (wrong labels are drawn in proportion to how
  often each label is right), and frequent words of the sentences ("The", "a", ".") are asked
  about too, since the labeler rates every token;
* soft labels (a distribution over the vocabulary per slot, as the labeler feeds them) are
  trained to act as mixtures of hard labels: P(yes) = sum_i p_i y_i for one slot,
  p_1[ve] p_2[hicle] y for two;
* the next-token distribution before the first label slot (the labeler's ``q``) is trained to
  predict the labels' first tokens ("ve" among them), and right after "ve" to predict "hicle",
  so KL(p || q) favours plausible labels slot by slot.

Run from the repository root::

    python scripts/train_toy_evaluator.py

It is deterministic for a given seed, torch build and thread count (``--threads``, default 1:
the committed weights were made with one thread; another count changes the floating-point
summation order and so the weights). Two runs give byte-identical ``model.safetensors``.
With one thread, on a 2-core machine shared with other jobs, training took 16 to 28 minutes
(966 s and 1649 s in two runs, 0.4 to 1.8 s a step as the load varied), then evaluation about
3 minutes (``--no-eval`` skips it); both runs wrote the same bytes. It writes the model with
`save_local_model` and a JSON report (``training_report.json``: settings, time, held-out
accuracy per concept, q) beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from saelens_tokenlabel.descent.soft_label import label_embeddings
from saelens_tokenlabel.evaluator.loading import load_local_model, save_local_model
from saelens_tokenlabel.evaluator.model import Evaluator
from saelens_tokenlabel.evaluator.prompts import PAPER_SYSTEM_PROMPT, PAPER_USER_TEMPLATE
from saelens_tokenlabel.toy.lexicon import (
    COLORS,
    CONCEPTS,
    DIGITS,
    FOODS,
    MAMMALS,
    NON_MAMMAL_ANIMALS,
    NUMBER_WORDS,
    OBJECTS,
    SUBSETS,
    TWO_TOKEN_CONCEPTS,
    VEHICLE_PIECES,
    VEHICLES,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "saelens_tokenlabel" / "data"
OUT_DIR = DATA_DIR / "toy_evaluator"
DATASET_FILES = ("animals", "mammals", "numbers", "mammal_text", "chinese", "palindromes")

LABELS = tuple(CONCEPTS)  # single-token labels: "animal", "mammal", "number", "digit", ...
PAIR_LABEL = "vehicle"  # the two-token label, read at two consecutive label slots
assert tuple(TWO_TOKEN_CONCEPTS) == (PAIR_LABEL,)
ALL_CONCEPTS = {**CONCEPTS, **TWO_TOKEN_CONCEPTS}
LEXICON = tuple(dict.fromkeys(w for ws in ALL_CONCEPTS.values() for w in ws))
SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|finetune_right_pad_id|>",  # a pad token distinct from <|eot_id|>, as in Llama 3.1
)
# Llama-3-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# The word splitter of `FeatureData` (saelens_tokenlabel/data.py): a run of letters/digits with
# its leading whitespace, one CJK character, or one other symbol.
TOKEN_RE = re.compile(r"\s*(?:[\u4e00-\u9fff]|[^\W_\u4e00-\u9fff]+|[^\s\w]|_)", re.UNICODE)

# ----------------------------------------------------------------------------- toy world
FILLER_NOUNS = (
    "garden", "park", "tree", "fence", "box", "bag", "floor", "wall", "bed", "field", "hill",
    "lake", "barn", "yard", "kitchen", "market", "street", "school", "forest", "beach", "hut",
)
SLOT_WORDS = {
    "mammal": MAMMALS,
    "animal": MAMMALS + NON_MAMMAL_ANIMALS,
    "number": NUMBER_WORDS + DIGITS,
    "color": COLORS,
    "food": FOODS,
    "vehicle": VEHICLES,
    "object": OBJECTS + FILLER_NOUNS,
}
TRAIN_TEMPLATES = (
    "The {animal} chased the {animal}.",
    "A {animal} slept under the {object}.",
    "The {animal} ate the {food}.",
    "I saw {number} {animal} near the {object}.",
    "A {color} {object} stopped by the {object}.",
    "The {color} {animal} ran to the {object}.",
    "I ate {number} {food}.",
    "She bought {number} {color} {object}.",
    "We had {food} and {food} for lunch.",
    "The {object} was {color}.",
    "My {animal} likes {food}.",
    "There are {number} {object} on the {object}.",
    "He painted the {object} {color}.",
    "The {animal} hid behind the {object}.",
    "{number} {animal} crossed the {object}.",
    "A {animal} found some {food} in the {object}.",
    "They counted {number} {color} {food}.",
    "The old {object} smelled of {food}.",
    "Look at the {color} {animal}!",
    "The {object} is next to the {object}.",
    "Her {object} fell into the {object}.",
    "The kids drew a {color} {animal} on the {object}.",
    "Add {number} cups of {food}.",
    "The {animal} and the {animal} played by the {object}.",
    "It costs {number} dollars.",
    "The {food} was {color}.",
    "A {mammal} barked at the mailman.",
    "The {animal} swam in the {object}.",
    "We counted {number} {object} and {number} {animal}.",
    "His {color} {object} is {number} years old.",
    "The {vehicle} stopped near the {object}.",
    "A {color} {vehicle} drove past the {animal}.",
    "We took the {vehicle} to the {object}.",
    "{number} {vehicle} waited by the {object}.",
    "The {animal} sat in the {vehicle}.",
    "Her {vehicle} was full of {food}.",
)
# Held-out templates: only in the evaluation set.
TEST_TEMPLATES = (
    "Yesterday the {animal} walked past the {object}.",
    "Please give me {number} {food}.",
    "The {color} {object} belongs to the {animal}.",
    "We saw a {animal} eating {food} near the {object}.",
    "Is the {food} {color} or {color}?",
    "Only {number} {animal} came back.",
    "The old {vehicle} was {color}.",
    "I rode a {vehicle} with {number} {animal}.",
)
SLOT_RE = re.compile(r"\{(\w+)\}")


def fill_template(template: str, rng: random.Random) -> str:
    return SLOT_RE.sub(lambda m: rng.choice(SLOT_WORDS[m.group(1)]), template)


def word_salad(rng: random.Random, context_words: list[str]) -> str:
    """A random sentence: filler words with lexicon words mixed in, so that the answer is
    learnt from the word and the label, not from the rest of the text."""
    n = rng.randint(2, 12)
    words = [rng.choice(LEXICON) if rng.random() < 0.25 else rng.choice(context_words)
             for _ in range(n)]
    if words[0] not in LEXICON and rng.random() < 0.7:  # "Cat" would not be in the lexicon
        words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words) + rng.choice([".", ".", "!", "?", ""])


def split_words(sentence: str) -> list[str]:
    """The words the labeler asks about: `FeatureData.examples` strips each token."""
    return [w for m in TOKEN_RE.finditer(sentence) if (w := m.group(0).strip())]


def concepts_of(word: str) -> tuple[str, ...]:
    """The toy world is closed: a word belongs to a concept iff the lexicon lists it there.
    Single-token concepts only (the labels of a one-slot prompt)."""
    return tuple(c for c, ws in CONCEPTS.items() if word in ws)


def is_vehicle(word: str) -> bool:
    return word in TWO_TOKEN_CONCEPTS[PAIR_LABEL]


def read_dataset_lines() -> dict[str, list[str]]:
    """The paper's synthetic datasets (package data), with ** markers and headers removed."""
    out = {}
    for name in DATASET_FILES:
        path = DATA_DIR / f"{name}.txt"
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            out[name] = [
                s.replace("**", "") for s in lines if s.strip() and not s.startswith("#")
            ]
    return out


# ----------------------------------------------------------------------------- tokenizer
def build_tokenizer(corpus: list[str], vocab_size: int, directory: Path):
    """Byte-level BPE + Llama-3 chat template, saved and reloaded (TransformerLens needs it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(directory))
    from transformers import AutoTokenizer  # noqa: F811  (reload, as TransformerLens needs)

    return AutoTokenizer.from_pretrained(str(directory))


def tokenizer_corpus(sentences: list[str], dataset_lines: dict[str, list[str]],
                     rng: random.Random) -> list[str]:
    corpus = [PAPER_SYSTEM_PROMPT] * 30 + ["Rating: 1", "Rating: 0"] * 30
    user = [PAPER_USER_TEMPLATE.format(sentence=s, word=rng.choice(split_words(s)),
                                       label=rng.choice(LABELS)) for s in sentences[:1500]]
    corpus += user + sentences
    for lines in dataset_lines.values():
        corpus += lines * 3
    # Every label and lexicon word must be one token, with and without a leading space.
    for w in sorted(set(LEXICON) | set(OBJECTS) | set(LABELS)):
        corpus += [w, " " + w] * 20
    # The two pieces of the two-token label, as tokens of their own. The whole word never
    # occurs in the corpus, so BPE never merges the pair into one token.
    corpus += list(VEHICLE_PIECES) * 40
    assert not any(PAIR_LABEL in line for line in corpus)
    return corpus


def check_single_tokens(tokenizer) -> dict[str, dict[str, int]]:
    ids = {}
    for w in sorted(set(LEXICON) | set(OBJECTS) | set(LABELS)):
        for form in (w, " " + w):
            enc = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise SystemExit(f"{form!r} is not a single token: {enc}. Raise --vocab-size.")
            ids[form] = enc[0]
    pair = tokenizer(PAIR_LABEL, add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(pair)
    if len(pair) != 2 or tuple(pieces) != VEHICLE_PIECES:
        raise SystemExit(f"{PAIR_LABEL!r} must be two tokens {VEHICLE_PIECES}, got {pieces}.")
    if set(pair) & {ids[c] for c in LABELS} or pair[0] == pair[1]:
        raise SystemExit(f"the pieces of {PAIR_LABEL!r} {pieces} collide with a label token.")
    return ids


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Item:
    sentence: str
    word: str
    label_ids: tuple[int, ...]  # one token per label slot (one or two slots)
    target: float  # 1: the word is an example of the label's concept; soft: P(yes) wanted
    kind: str  # "own", "other", "nonmember", "distractor", "pair", "pair_negative", "soft"
    mix: torch.Tensor | None = None  # soft label: [slots, vocab], a distribution per slot


class World:
    """Samples rating examples; all prompt token ids come from `Evaluator`."""

    def __init__(self, ev: Evaluator, sentences: list[str], rng: random.Random,
                 pair_fraction: float):
        self.ev = ev
        self.rng = rng
        self.pair_fraction = pair_fraction
        tok = ev.tokenizer
        self.label_id = {c: tok.convert_tokens_to_ids(c) for c in LABELS}
        self.concept_ids = set(self.label_id.values())
        self.pair = tuple(tok(PAIR_LABEL, add_special_tokens=False)["input_ids"])
        self.first_ids = self.concept_ids | {self.pair[0]}  # tokens that start a concept label
        # word -> sentences holding it (each word of each sentence is a possible question)
        self.by_word: dict[str, list[str]] = {}
        for s in sentences:
            for w in dict.fromkeys(split_words(s)):
                self.by_word.setdefault(w, []).append(s)
        lex = self.lexicon = set(LEXICON)
        self.sentences = sentences
        self.nonmembers = sorted(w for w in self.by_word if w not in lex)
        self.groups = {
            "mammal": MAMMALS, "nonmammal": NON_MAMMAL_ANIMALS, "numword": NUMBER_WORDS,
            "digit": DIGITS, "color": COLORS, "food": FOODS, "vehicle": VEHICLES,
        }
        # How often each label is asked with answer 1; wrong labels are drawn in the same
        # proportions, so no label carries a prior for "1" (else "animal", the label of two
        # word groups, would learn to say "1" to words it does not recognise).
        self.yes_share = {c: 0.0 for c in LABELS}
        for ws in self.groups.values():
            own = concepts_of(ws[0])
            for c in own:
                self.yes_share[c] += 1 / len(own)
        special = set(tok.all_special_ids)
        self.special_ids = torch.tensor(sorted(special))
        # the pieces of the two-token label are distractors too: alone they mean nothing
        self.all_distractors = [
            i for i in range(len(tok)) if i not in special and i not in self.concept_ids
        ]
        # hard distractors: label look-alikes (" animal", "anim", "Animal"), lexicon words and
        # the pieces of the two-token label
        hard = set(self.pair)
        for i in self.all_distractors:
            s = tok.decode([i]).strip().lower()
            if len(s) >= 2 and (any(lab.startswith(s) or s.startswith(lab[:3])
                                    for lab in LABELS + (PAIR_LABEL,))
                                or s in lex or s in OBJECTS):
                hard.add(i)
        self.hard_distractors = sorted(hard)
        self._prefix_cache: dict[tuple[str, str], tuple[int, ...]] = {}

    def distractor(self) -> int:
        pool = self.hard_distractors if self.rng.random() < 0.5 else self.all_distractors
        return self.rng.choice(pool)

    def context(self, word: str) -> str:
        r = self.rng.random()
        if r < 0.15 or word not in self.by_word:
            return word  # a one-word "sentence", as in the paper's word-list datasets
        return self.rng.choice(self.by_word[word])

    def frequent_word(self) -> tuple[str, str]:
        # a word as frequent as it is in text ("The", "a", "."): the labeler rates every
        # token of a sentence, and these sit next to the concept words
        sentence = self.rng.choice(self.sentences)
        word = self.rng.choice([w for w in split_words(sentence) if w not in self.lexicon]
                               or split_words(sentence))
        return sentence, word

    def sample(self) -> Item:
        if self.rng.random() < self.pair_fraction:
            return self.sample_pair()
        rng = self.rng
        r = rng.random()
        if r < 0.7:
            word = rng.choice(self.groups[rng.choice(list(self.groups))])
            sentence = self.context(word)
        elif r < 0.85:
            word = rng.choice(self.nonmembers)
            sentence = self.context(word)
        else:
            sentence, word = self.frequent_word()
        own = concepts_of(word)
        if own and rng.random() < 0.5:
            return Item(sentence, word, (self.label_id[rng.choice(own)],), 1, "own")
        if rng.random() < 0.35:
            return Item(sentence, word, (self.distractor(),), 0, "distractor")
        others = [c for c in LABELS if c not in own]
        # the hard negatives: a parent's member outside the subset ("bird" for "mammal",
        # "seven" for "digit")
        subsets = [c for c, parent in SUBSETS.items() if parent in own and c in others]
        if subsets and rng.random() < 0.5:
            label = rng.choice(subsets)
        else:
            label = rng.choices(others, weights=[self.yes_share[c] for c in others])[0]
        return Item(sentence, word, (self.label_id[label],), 0,
                    "other" if own else "nonmember")

    def pair_negative(self) -> tuple[int, int]:
        """Two label slots holding anything but the exact pair: a piece with a distractor or
        another label, the pieces swapped or doubled, labels or distractors in both."""
        rng = self.rng
        a, b = self.pair
        lab = self.label_id[rng.choice(LABELS)]
        d = self.distractor()
        choice = rng.randrange(9)
        out = [(a, d), (d, b), (b, a), (a, a), (b, b), (lab, b), (a, lab),
               (lab, d) if rng.random() < 0.5 else (d, lab), (d, self.distractor())][choice]
        return out if out != self.pair else (b, a)

    def sample_pair(self) -> Item:
        """A prompt with two label slots: only the exact two-token label says "1", and only
        for the members of its concept."""
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            word = rng.choice(VEHICLES)
            sentence = self.context(word)
        elif r < 0.7:
            word = rng.choice(self.groups[rng.choice(list(self.groups))])
            sentence = self.context(word)
        elif r < 0.85:
            word = rng.choice(self.nonmembers)
            sentence = self.context(word)
        else:
            sentence, word = self.frequent_word()
        member = is_vehicle(word)
        if member and rng.random() < 0.5:
            return Item(sentence, word, self.pair, 1, "pair")
        if not member and rng.random() < 0.4:
            return Item(sentence, word, self.pair, 0, "pair")
        return Item(sentence, word, self.pair_negative(), 0, "pair_negative")

    def soft_slot(self, gen: torch.Generator, favoured: list[int]) -> torch.Tensor:
        """A distribution over the vocabulary for one label slot, like a labeler's p."""
        rng = self.rng
        V = len(self.ev.tokenizer)
        if rng.random() < 0.6:  # a few tokens, Dirichlet(1) weights
            k = rng.randint(2, 4)
            ids = []
            for j in range(k):
                r = rng.random()
                if favoured and (r < 0.25 or (j == 0 and rng.random() < 0.5)):
                    ids.append(rng.choice(favoured))
                elif r < 0.6:
                    ids.append(self.label_id[rng.choice(LABELS)])
                else:
                    ids.append(self.distractor())
            w = torch.empty(k).exponential_(generator=gen)
            return torch.zeros(V).index_add_(0, torch.tensor(ids), w / w.sum())
        # dense: logits noise plus a few boosted tokens, like a run in progress
        v = torch.randn(V, generator=gen) * rng.uniform(0.0, 2.5)
        for _ in range(rng.randint(0, 3)):
            r = rng.random()
            t = (rng.choice(favoured) if favoured and r < 0.3 else
                 self.label_id[rng.choice(LABELS)] if r < 0.6 else self.distractor())
            v[t] += rng.uniform(0.0, 10.0)
        v[self.special_ids] = float("-inf")
        return torch.softmax(v, -1)

    def sample_soft(self, gen: torch.Generator) -> Item:
        """A soft label p (a mixture of tokens) at each label slot, as the labeler feeds it.

        The target is the probability that a label drawn from p (independently per slot) is
        one of the word's own concepts: sum_i p_i * y_i for one slot, p_1[ve] * p_2[hicle] * y
        for two. Trained on these, the evaluator treats a soft label as a mixture of hard
        labels, so the labeler's loss has no optimum away from the simplex's corners that the
        hard labels would not support (without them, mixtures of unrelated tokens could fit a
        feature better than the feature's own concept token).
        """
        base = self.sample()
        if len(base.label_ids) == 1:
            own = [self.label_id[c] for c in concepts_of(base.word)]
            p = self.soft_slot(gen, own)
            target = float(p[own].sum()) if own else 0.0
            mix = p[None]
        else:
            a, b = self.pair
            # favour the pieces in either slot, so that swapped and doubled pieces get mass too
            p1 = self.soft_slot(gen, [a] * 3 + [b])
            p2 = self.soft_slot(gen, [b] * 3 + [a])
            target = float(p1[a] * p2[b]) if is_vehicle(base.word) else 0.0
            mix = torch.stack([p1, p2])
        return Item(base.sentence, base.word, tuple(int(i) for i in mix.argmax(-1)),
                    min(1.0, target), "soft", mix)

    def prefix(self, sentence: str, word: str) -> tuple[int, ...]:
        key = (sentence, word)
        if key not in self._prefix_cache:
            self._prefix_cache[key] = self.ev.encode(sentence, word).prefix_ids
        return self._prefix_cache[key]


# ----------------------------------------------------------------------------- batches
def make_batch(world: World, items: list[Item], pad_id: int, crop: bool, rng: random.Random):
    """Token ids (right-padded), the first label slot and last positions, targets.

    With ``crop``, most batches keep BOS plus only a tail of the prompt (a random part of the
    system prompt onward, never cutting into the user turn): rotary attention only sees
    relative positions, and the word and label sit at fixed distances from the end, so this
    trains the same circuit as the full prompt at a fraction of the cost. A quarter of the
    batches keep the full prompt. The cut is shared by the batch, so padding stays short.
    """
    tail = list(world.ev.suffix_tail_ids)
    rows, label_pos = [], []
    cut = 1
    if crop:
        r = rng.random()
        if r < 0.5:
            cut = world.user_start  # BOS + user turn only
        elif r < 0.75:
            cut = rng.randint(1, world.user_start)
    for it in items:
        prefix = list(world.prefix(it.sentence, it.word))
        prefix = prefix[:1] + prefix[cut:]
        label_pos.append(len(prefix))
        rows.append(prefix + list(it.label_ids) + tail)
    T = max(map(len, rows))
    tokens = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    last = torch.tensor([len(r) - 1 for r in rows])
    return tokens, torch.tensor(label_pos), last


def soft_label_hook(items: list[Item], label_pos: torch.Tensor, W_E: torch.Tensor):
    """A hook on hook_embed writing p @ W_E at the label slots of the rows with a soft label."""
    rows, pos, mixes = [], [], []
    for i, it in enumerate(items):
        if it.mix is not None:
            for j in range(it.mix.shape[0]):
                rows.append(i)
                pos.append(int(label_pos[i]) + j)
                mixes.append(it.mix[j])
    if not rows:
        return []
    P = torch.stack(mixes)
    idx, at = torch.tensor(rows), torch.tensor(pos)

    def hook(embed, hook):
        embed = embed.clone()
        # The optimisation's own label embedding (p @ W_E), so training sees what labeling does.
        embed[idx, at] = label_embeddings(P, W_E).to(embed.dtype)
        return embed

    return [("hook_embed", hook)]


def gather_logits(model, tokens, positions: list[torch.Tensor]):
    """Logits at chosen positions (one per row per tensor), unembedding only those."""
    resid = model(tokens, stop_at_layer=model.cfg.n_layers)
    rows = torch.arange(tokens.shape[0])
    out = []
    for pos in positions:
        out.append(model.unembed(model.ln_final(resid[rows, pos][:, None, :]))[:, 0])
    return out


def training_loss(model, world: World, items: list[Item], pad_id: int, rng: random.Random,
                  lm_weight: float):
    """Forward one training batch (cropped prompts, soft labels written in by the hook).
    Returns the loss (class-balanced two-way BCE + lm_weight * LM + 0.1 * full-vocabulary CE),
    its BCE and LM parts, the two-way log-probabilities and the targets."""
    ev = world.ev
    yes_no = torch.tensor([ev.yes_id, ev.no_id])
    tokens, label_pos, last = make_batch(world, items, pad_id, crop=True, rng=rng)
    with model.hooks(fwd_hooks=soft_label_hook(items, label_pos, model.W_E)):
        lm_logits, lm2_logits, ans_logits = gather_logits(
            model, tokens, [label_pos - 1, label_pos, last])
    t = torch.tensor([it.target for it in items])  # wanted P(yes)
    logp = torch.log_softmax(ans_logits[:, yes_no].float(), -1)
    bce = -(t * logp[:, 0] + (1 - t) * logp[:, 1])
    # class-balanced weights: yes and no carry equal total weight
    w = 0.5 * t / t.sum().clamp_min(1e-6) + 0.5 * (1 - t) / (1 - t).sum().clamp_min(1e-6)
    ce = (bce * w).sum()
    # q: before the label, the first token of a concept label (a whole single-token label,
    # or the first piece of the two-token one); after that first piece, the second piece
    is_concept = torch.tensor([
        it.mix is None and (it.label_ids == world.pair or (
            len(it.label_ids) == 1 and it.label_ids[0] in world.concept_ids))
        for it in items])
    after_first = torch.tensor([it.mix is None and len(it.label_ids) == 2
                                and it.label_ids[0] == world.pair[0] for it in items])
    lm_in = torch.cat([lm_logits[is_concept], lm2_logits[after_first]]).float()
    lm_t = torch.cat([torch.tensor([it.label_ids[0] for it in items])[is_concept],
                      torch.full((int(after_first.sum()),), world.pair[1])])
    lm = F.cross_entropy(lm_in, lm_t)
    # a little loss on the full-vocabulary answer keeps " 1"/" 0" the top tokens too
    full_t = torch.zeros(ans_logits.shape, dtype=torch.float32)
    full_t[:, ev.yes_id] = t
    full_t[:, ev.no_id] = 1 - t
    full = F.cross_entropy(ans_logits.float(), full_t)
    loss = ce + lm_weight * lm + 0.1 * full
    return loss, ce, lm, logp, t


@torch.no_grad()
def predict(model, world: World, items: list[Item], pad_id: int, batch_size: int = 128):
    """P(answer 1) from the two-way softmax over [yes_id, no_id], on full prompts."""
    model.eval()
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        tokens, label_pos, last = make_batch(world, chunk, pad_id, crop=False, rng=world.rng)
        with model.hooks(fwd_hooks=soft_label_hook(chunk, label_pos, model.W_E)):
            (logits,) = gather_logits(model, tokens, [last])
        two = logits[:, [world.ev.yes_id, world.ev.no_id]].float()
        out.append(torch.softmax(two, -1)[:, 0])
    return torch.cat(out)


# ----------------------------------------------------------------------------- evaluation
def word_items(world: World, s: str, w: str, rng: random.Random) -> list[Item]:
    """Every label asked about one word: each concept label, the two-token label, a
    distractor, and one hard negative of the two-token label."""
    own = concepts_of(w)
    items = [Item(s, w, (world.label_id[c],), int(c in own), "concept") for c in LABELS]
    items.append(Item(s, w, world.pair, int(is_vehicle(w)), "pair"))
    items.append(Item(s, w, (rng.choice(world.all_distractors),), 0, "distractor"))
    items.append(Item(s, w, world.pair_negative(), 0, "pair_negative"))
    return items


def eval_items(world: World, sentences: list[str], rng: random.Random, n_per: int = 6):
    """A fixed, labelled evaluation set on the given sentences."""
    by_word: dict[str, list[str]] = {}
    for s in sentences:
        for w in dict.fromkeys(split_words(s)):
            by_word.setdefault(w, []).append(s)
    words = sorted(by_word)
    items = []
    for w in words:
        own = concepts_of(w) or is_vehicle(w)
        n = n_per if own else max(2, n_per // 3)
        for _ in range(n):
            s = rng.choice(by_word[w])
            items += word_items(world, s, w, rng)
            items.append(Item(s, w, (rng.choice(world.hard_distractors),), 0, "distractor"))
    return items


def metrics(world: World, items: list[Item], probs: torch.Tensor) -> dict:
    pred = (probs > 0.5).tolist()
    pairs = list(zip(items, pred, strict=True))
    labels = {(v,): k for k, v in world.label_id.items()} | {world.pair: PAIR_LABEL}
    res: dict = {}
    correct = [p == 1 for it, p in pairs if it.label_ids in labels and it.target == 1]
    res["acc_correct_label_on_members"] = sum(correct) / max(1, len(correct))
    wrong = [p for it, p in pairs if it.label_ids in labels and it.target == 0]
    res["p1_rate_concept_label_nonmember"] = sum(wrong) / max(1, len(wrong))
    dis = [p for it, p in pairs if it.label_ids not in labels and len(it.label_ids) == 1]
    res["p1_rate_distractor_label"] = sum(dis) / max(1, len(dis))
    two = [p for it, p in pairs if it.label_ids not in labels and len(it.label_ids) == 2]
    res["p1_rate_two_slot_hard_negative"] = sum(two) / max(1, len(two))
    two_m = [p for it, p in pairs
             if it.label_ids not in labels and len(it.label_ids) == 2 and is_vehicle(it.word)]
    res["p1_rate_two_slot_hard_negative_on_vehicles"] = sum(two_m) / max(1, len(two_m))
    acc = [int(p) == it.target for it, p in pairs]
    res["accuracy_all"] = sum(acc) / len(acc)
    per = {}
    for ids, c in labels.items():
        pos = [p for it, p in pairs if it.label_ids == ids and it.target]
        neg = [p for it, p in pairs if it.label_ids == ids and not it.target]
        tpr = sum(pos) / max(1, len(pos))
        tnr = 1 - sum(neg) / max(1, len(neg))
        entry = {"balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr,
                 "n_members": len(pos), "n_nonmembers": len(neg)}
        if c in SUBSETS:
            # the subset label on the parent's other members: the hierarchy's hard negatives
            siblings = set(CONCEPTS[SUBSETS[c]]) - set(CONCEPTS[c])
            na = [p for it, p in pairs if it.label_ids == ids and it.word in siblings]
            entry["tnr_on_siblings"] = 1 - sum(na) / max(1, len(na))
            entry["balanced_accuracy_vs_siblings"] = (tpr + entry["tnr_on_siblings"]) / 2
        per[c] = entry
    res["per_concept"] = per
    return res


def evaluate(model, world: World, eval_set: list[Item], dataset_sentences: list[str],
             pad_id: int, seed: int) -> tuple[dict, dict, dict]:
    """Held-out full prompts, every word of the synthetic datasets, soft labels, and q."""
    probs = predict(model, world, eval_set, pad_id)
    held_out = metrics(world, eval_set, probs)
    # every word of the paper's datasets, as the labeler rates them
    ds_rng = random.Random(seed + 3)
    ds_items = []
    world.rng.seed(seed + 3)  # pair_negative draws from the world's rng
    for sent in dataset_sentences:
        for w in dict.fromkeys(split_words(sent)):
            ds_items += word_items(world, sent, w, ds_rng)
    ds_metrics = metrics(world, ds_items, predict(model, world, ds_items, pad_id))
    world.rng.seed(seed + 4)
    soft_items = [world.sample_soft(torch.Generator().manual_seed(seed + 4 + i))
                  for i in range(600)]
    soft_p = predict(model, world, soft_items, pad_id)
    soft_t = torch.tensor([it.target for it in soft_items])
    held_out["soft_label_mean_abs_error"] = (soft_p - soft_t).abs().mean().item()
    held_out["soft_label_max_abs_error"] = (soft_p - soft_t).abs().max().item()
    pair_soft = torch.tensor([len(it.label_ids) == 2 for it in soft_items])
    held_out["soft_two_slot_mean_abs_error"] = (
        (soft_p - soft_t).abs()[pair_soft].mean().item())
    q_report = q_at_label_slots(model, world, eval_set[::37], pad_id)
    print(json.dumps({"held_out": held_out, "q_at_label_slots": q_report}, indent=1))
    print("every word of the synthetic datasets' sentences (seen in training):")
    print(json.dumps(ds_metrics, indent=1))
    return held_out, ds_metrics, q_report


@torch.no_grad()
def q_at_label_slots(model, world: World, items: list[Item], pad_id: int) -> dict:
    """The next-token distribution (the labeler's q) before the first label slot, and after the
    first piece of the two-token label: how much mass goes where the labeler wants it."""
    items = [Item(it.sentence, it.word, world.pair, 0, "q") for it in items]
    tokens, label_pos, _ = make_batch(world, items, pad_id, crop=False, rng=world.rng)
    q1, q2 = (torch.softmax(x.float(), -1)
              for x in gather_logits(model, tokens, [label_pos - 1, label_pos]))
    first = sorted(world.first_ids)
    tok = world.ev.tokenizer
    return {
        "n_prompts": len(items),
        "slot1_mass_on_label_first_tokens": q1[:, first].sum(-1).mean().item(),
        "slot1_mean_q": {tok.decode([i]): q1[:, i].mean().item() for i in first},
        "slot2_after_first_piece_q_of_second_piece": q2[:, world.pair[1]].mean().item(),
        "slot2_after_first_piece_top1_is_second_piece": (
            q2.argmax(-1) == world.pair[1]).float().mean().item(),
    }


def portable_tokenizer_config(directory: Path) -> None:
    """Let older transformers (4.x) load the tokenizer too.

    transformers 5 writes ``tokenizer_class: TokenizersBackend`` (unknown to 4.x) and the chat
    template only to ``chat_template.jinja`` (read since 4.47 or so). Name the class by its
    portable alias and keep a copy of the template in ``tokenizer_config.json``.
    """
    path = directory / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.setdefault("chat_template", CHAT_TEMPLATE)
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lm-weight", type=float, default=0.3)
    ap.add_argument("--soft-fraction", type=float, default=0.5,
                    help="share of rows with a soft label (a token mixture) at the label slot")
    ap.add_argument("--pair-fraction", type=float, default=0.25,
                    help="share of rows with two label slots (the two-token concept)")
    ap.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the trained model (--no-eval: train and save only, e.g. to "
                         "check that two runs give the same bytes)")
    ap.add_argument("--init-from", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab-size", type=int, default=1100)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; the committed weights were made with 1 (other counts "
                         "change the floating-point summation order, hence the weights)")
    args = ap.parse_args()

    t_start = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    # --- toy world
    dataset_lines = read_dataset_lines()
    template_sentences = [fill_template(rng.choice(TRAIN_TEMPLATES), rng) for _ in range(6000)]
    dataset_sentences = [s for lines in dataset_lines.values() for s in lines]
    context_words = sorted((
        {w for t in TRAIN_TEMPLATES for w in split_words(SLOT_RE.sub("", t))}
        | set(FILLER_NOUNS) | set(OBJECTS)
        | {w for s in dataset_sentences for w in split_words(s)}
    ) - set(LEXICON))
    salad = [word_salad(rng, context_words) for _ in range(3000)]
    train_sentences = template_sentences + dataset_sentences + salad
    test_rng = random.Random(args.seed + 1)
    test_sentences = [fill_template(t, test_rng) for t in TEST_TEMPLATES for _ in range(60)]
    print(f"datasets found: {sorted(dataset_lines)}; {len(train_sentences)} train sentences")

    # --- tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tokenizer_corpus(template_sentences, dataset_lines, rng),
                                    args.vocab_size, Path(tmp))
        single = check_single_tokens(tokenizer)
        # --- model
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        cfg = HookedTransformerConfig(
            model_name="toy-llama-evaluator",
            n_layers=2, d_model=64, n_heads=4, n_key_value_heads=2, d_head=16, d_mlp=256,
            n_ctx=512, d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS",
            positional_embedding_type="rotary", rotary_dim=16, gated_mlp=True,
            default_prepend_bos=False, seed=args.seed,
        )
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    ev = Evaluator(model)
    model.requires_grad_(True)
    pad_id = tokenizer.pad_token_id
    world = World(ev, train_sentences, rng, args.pair_fraction)
    # where the user turn starts in the prompt: cropping never cuts into it
    probe = list(ev.encode("x", "x").prefix_ids)
    sys_only = tokenizer.apply_chat_template(
        [{"role": "system", "content": PAPER_SYSTEM_PROMPT}], tokenize=False)
    world.user_start = len(tokenizer(sys_only, add_special_tokens=False)["input_ids"])
    assert probe[: world.user_start] == tokenizer(sys_only, add_special_tokens=False)["input_ids"]
    print(f"vocab {len(tokenizer)}, params {sum(p.numel() for p in model.parameters())}, "
          f"prefix tokens (sentence 'x') {len(probe)}, tail {len(ev.suffix_tail_ids)}, "
          f"yes/no ids {ev.yes_id}/{ev.no_id} {ev.answer_strings}")
    print(f"label ids {world.label_id}, pair {PAIR_LABEL!r} {world.pair}; "
          f"distractors {len(world.all_distractors)} "
          f"(hard {len(world.hard_distractors)})")

    eval_set = eval_items(world, test_sentences, random.Random(args.seed + 2))

    # --- training
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(args.seed)
    if args.init_from is not None:  # experiments only: continue from saved weights
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(args.init_from / "model.safetensors")))
    t_train = time.time()
    log = []
    for step in range(args.steps):
        model.train()
        items = [world.sample_soft(gen) if rng.random() < args.soft_fraction else world.sample()
                 for _ in range(args.batch_size)]
        loss, ce, lm, logp, t = training_loss(model, world, items, pad_id, rng, args.lm_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            hard = torch.tensor([it.mix is None for it in items])
            acc = ((logp[:, 0] > logp[:, 1]) == (t > 0.5))[hard].float().mean().item()
            print(f"step {step:5d} loss {loss.item():.4f} ce {ce.item():.4f} lm {lm.item():.3f} "
                  f"batch-acc {acc:.3f} lr {sched.get_last_lr()[0]:.2e} "
                  f"t {time.time() - t_train:.0f}s", flush=True)
            log.append({"step": step, "loss": loss.item(), "batch_acc": acc})
    train_seconds = time.time() - t_train

    model.eval()
    model.requires_grad_(False)
    held_out = ds_metrics = q_report = None
    if args.eval:
        held_out, ds_metrics, q_report = evaluate(model, world, eval_set, dataset_sentences,
                                                  pad_id, args.seed)

    # --- save
    save_local_model(model, args.out)
    portable_tokenizer_config(args.out)
    reloaded = Evaluator(load_local_model(args.out, device="cpu", dtype=torch.float32))
    assert reloaded.yes_id == ev.yes_id and reloaded.suffix_tail_ids == ev.suffix_tail_ids
    report = {
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "warmup": args.warmup,
        "lm_weight": args.lm_weight,
        "soft_fraction": args.soft_fraction,
        "pair_fraction": args.pair_fraction,
        "threads": args.threads,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "torch": torch.__version__,
        "vocab_size": len(tokenizer),
        "n_params": sum(p.numel() for p in model.parameters()),
        "datasets_in_tokenizer_and_training": sorted(dataset_lines),
        "yes_id": ev.yes_id,
        "no_id": ev.no_id,
        "label_token_ids": {c: world.label_id[c] for c in LABELS},
        "label_token_ids_with_space": {c: single[" " + c] for c in LABELS},
        "two_token_label_ids": {PAIR_LABEL: list(world.pair)},
        "two_token_label_pieces": {PAIR_LABEL: list(VEHICLE_PIECES)},
        "q_at_label_slots": q_report,
        "held_out_full_prompts": held_out,
        "synthetic_dataset_sentences": ds_metrics,
        "log": log,
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=1))
    print(f"saved to {args.out} in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
