#!/usr/bin/env python
"""Train the toy evaluator shipped in ``saelens_tokenlabel/data/toy_evaluator/``.

The toy evaluator is a tiny Llama-shaped HookedTransformer (rotary, RMSNorm, gated SiLU MLP,
grouped-query attention) with a byte-level BPE tokenizer and a Llama-3-like chat template. It
is trained, offline and from scratch, on the paper's rating prompt (rendered by `Evaluator`, so
the token ids are exactly those the labeler uses) to answer "is WORD an example of the concept
LABEL?" for the toy lexicon (`saelens_tokenlabel.toy.lexicon`):

* a concept label ("animal", "mammal", "number", "color", "food") gets "1" exactly on its
  member words (mammals are animals too: "cat" is "1" for both "animal" and "mammal");
* any other token at the label slot (a *distractor*: " animal" with a space, "anim", "cat",
  "book", ...) gets "0" for every word, so the label cannot be ignored and the only labels
  that separate a concept's members from the rest are the concept's own label token;
* the next-token distribution at the label slot (the labeler's ``q``) is trained to predict the
  concept labels, so KL(p || q) favours plausible labels.

Run from the repository root (about 6 minutes on 2 CPU cores)::

    python scripts/train_toy_evaluator.py

It is deterministic for a given seed and torch build. It writes the model with
`save_local_model` and a JSON report (``training_report.json``) beside it.
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

from saelens_tokenlabel.evaluator import Evaluator
from saelens_tokenlabel.loading import load_local_model, save_local_model
from saelens_tokenlabel.prompts import PAPER_SYSTEM_PROMPT, PAPER_USER_TEMPLATE
from saelens_tokenlabel.toy.lexicon import (
    COLORS,
    CONCEPTS,
    DIGITS,
    FOODS,
    MAMMALS,
    NON_MAMMAL_ANIMALS,
    NUMBER_WORDS,
    OBJECTS,
)

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "saelens_tokenlabel" / "data"
OUT_DIR = DATA_DIR / "toy_evaluator"
DATASET_FILES = ("animals", "mammals", "numbers", "mammal_text", "chinese", "palindromes")

LABELS = tuple(CONCEPTS)  # ("animal", "mammal", "number", "color", "food")
LEXICON = tuple(dict.fromkeys(w for ws in CONCEPTS.values() for w in ws))
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
    "lake", "barn", "yard", "kitchen", "market", "street", "school", "forest", "beach", "boat",
)
SLOT_WORDS = {
    "mammal": MAMMALS,
    "animal": MAMMALS + NON_MAMMAL_ANIMALS,
    "number": NUMBER_WORDS + DIGITS,
    "color": COLORS,
    "food": FOODS,
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
)
# Held-out templates: only in the evaluation set.
TEST_TEMPLATES = (
    "Yesterday the {animal} walked past the {object}.",
    "Please give me {number} {food}.",
    "The {color} {object} belongs to the {animal}.",
    "We saw a {animal} eating {food} near the {object}.",
    "Is the {food} {color} or {color}?",
    "Only {number} {animal} came back.",
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
    """The toy world is closed: a word belongs to a concept iff the lexicon lists it there."""
    return tuple(c for c, ws in CONCEPTS.items() if word in ws)


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
    return corpus


def check_single_tokens(tokenizer) -> dict[str, dict[str, int]]:
    ids = {}
    for w in sorted(set(LEXICON) | set(OBJECTS) | set(LABELS)):
        for form in (w, " " + w):
            enc = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(enc) != 1:
                raise SystemExit(f"{form!r} is not a single token: {enc}. Raise --vocab-size.")
            ids[form] = enc[0]
    return ids


# ----------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Item:
    sentence: str
    word: str
    label_id: int
    target: float  # 1: the word is an example of the label's concept; soft: P(yes) wanted
    kind: str  # "own", "other", "nonmember", "distractor", "soft"
    mix: torch.Tensor | None = None  # soft label: a distribution over the vocabulary


class World:
    """Samples rating examples; all prompt token ids come from `Evaluator`."""

    def __init__(self, ev: Evaluator, sentences: list[str], rng: random.Random):
        self.ev = ev
        self.rng = rng
        tok = ev.tokenizer
        self.label_id = {c: tok.convert_tokens_to_ids(c) for c in LABELS}
        self.concept_ids = set(self.label_id.values())
        # word -> sentences holding it (each word of each sentence is a possible question)
        self.by_word: dict[str, list[str]] = {}
        for s in sentences:
            for w in dict.fromkeys(split_words(s)):
                self.by_word.setdefault(w, []).append(s)
        lex = set(LEXICON)
        self.nonmembers = sorted(w for w in self.by_word if w not in lex)
        self.groups = {
            "mammal": MAMMALS, "nonmammal": NON_MAMMAL_ANIMALS, "numword": NUMBER_WORDS,
            "digit": DIGITS, "color": COLORS, "food": FOODS,
        }
        # distractors: every ordinary token that is not a concept label
        special = set(tok.all_special_ids)
        self.special_ids = torch.tensor(sorted(special))
        self.all_distractors = [
            i for i in range(len(tok)) if i not in special and i not in self.concept_ids
        ]
        # hard distractors: label look-alikes (" animal", "anim", "Animal") and lexicon words
        hard = set()
        for i in self.all_distractors:
            s = tok.decode([i]).strip().lower()
            if len(s) >= 2 and (any(lab.startswith(s) or s.startswith(lab[:3]) for lab in LABELS)
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

    def sample(self) -> Item:
        rng = self.rng
        if rng.random() < 0.7:
            word = rng.choice(self.groups[rng.choice(list(self.groups))])
        else:
            word = rng.choice(self.nonmembers)
        sentence = self.context(word)
        own = concepts_of(word)
        if own and rng.random() < 0.5:
            return Item(sentence, word, self.label_id[rng.choice(own)], 1, "own")
        if rng.random() < 0.35:
            return Item(sentence, word, self.distractor(), 0, "distractor")
        others = [c for c in LABELS if c not in own]
        if "animal" in own and "mammal" in others and rng.random() < 0.5:
            label = "mammal"  # the hard negative: an animal that is not a mammal
        else:
            label = rng.choice(others)
        return Item(sentence, word, self.label_id[label], 0, "other" if own else "nonmember")

    def sample_soft(self, gen: torch.Generator) -> Item:
        """A soft label p (a mixture of tokens) at the label slot, as the labeler feeds it.

        The target is the probability that a label drawn from p is one of the word's own
        concepts: sum_i p_i * y_i. Trained on these, the evaluator treats a soft label as a
        mixture of hard labels, so the labeler's loss has no optimum away from the simplex's
        corners that the hard labels would not support (without them, mixtures of unrelated
        tokens could fit a feature better than the feature's own concept token).
        """
        rng = self.rng
        base = self.sample()
        V = len(self.ev.tokenizer)
        own = [self.label_id[c] for c in concepts_of(base.word)]
        if rng.random() < 0.6:  # a few tokens, Dirichlet(1) weights
            k = rng.randint(2, 4)
            ids = []
            for j in range(k):
                r = rng.random()
                if own and (r < 0.25 or (j == 0 and rng.random() < 0.5)):
                    ids.append(rng.choice(own))
                elif r < 0.6:
                    ids.append(self.label_id[rng.choice(LABELS)])
                else:
                    ids.append(self.distractor())
            w = torch.empty(k).exponential_(generator=gen)
            p = torch.zeros(V).index_add_(0, torch.tensor(ids), w / w.sum())
        else:  # dense: logits noise plus a few boosted tokens, like a run in progress
            v = torch.randn(V, generator=gen) * rng.uniform(0.0, 2.5)
            for _ in range(rng.randint(0, 3)):
                r = rng.random()
                t = (rng.choice(own) if own and r < 0.3 else
                     self.label_id[rng.choice(LABELS)] if r < 0.6 else self.distractor())
                v[t] += rng.uniform(0.0, 10.0)
            v[self.special_ids] = float("-inf")
            p = torch.softmax(v, -1)
        target = float(p[own].sum()) if own else 0.0
        return Item(base.sentence, base.word, int(p.argmax()), min(1.0, target), "soft", p)

    def prefix(self, sentence: str, word: str) -> tuple[int, ...]:
        key = (sentence, word)
        if key not in self._prefix_cache:
            self._prefix_cache[key] = self.ev.encode(sentence, word).prefix_ids
        return self._prefix_cache[key]


# ----------------------------------------------------------------------------- batches
def make_batch(world: World, items: list[Item], pad_id: int, crop: bool, rng: random.Random):
    """Token ids (right-padded), the label slot and last positions, targets.

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
        rows.append(prefix + [it.label_id] + tail)
    T = max(map(len, rows))
    tokens = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    last = torch.tensor([len(r) - 1 for r in rows])
    return tokens, torch.tensor(label_pos), last


def soft_label_hook(items: list[Item], label_pos: torch.Tensor, W_E: torch.Tensor):
    """A hook on hook_embed writing p @ W_E at the label slot of the rows with a soft label."""
    rows = [i for i, it in enumerate(items) if it.mix is not None]
    if not rows:
        return []
    P = torch.stack([items[i].mix for i in rows])
    idx = torch.tensor(rows)

    def hook(embed, hook):
        embed = embed.clone()
        embed[idx, label_pos[idx]] = (P @ W_E).to(embed.dtype)
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
def eval_items(world: World, sentences: list[str], rng: random.Random, n_per: int = 6):
    """A fixed, labelled evaluation set on the given sentences."""
    by_word: dict[str, list[str]] = {}
    for s in sentences:
        for w in dict.fromkeys(split_words(s)):
            by_word.setdefault(w, []).append(s)
    words = sorted(by_word)
    items = []
    for w in words:
        own = concepts_of(w)
        n = n_per if own else max(2, n_per // 3)
        for _ in range(n):
            s = rng.choice(by_word[w])
            for c in LABELS:
                items.append(Item(s, w, world.label_id[c], int(c in own), "concept"))
            items.append(Item(s, w, rng.choice(world.all_distractors), 0, "distractor"))
            items.append(Item(s, w, rng.choice(world.hard_distractors), 0, "distractor"))
    return items


def metrics(world: World, items: list[Item], probs: torch.Tensor) -> dict:
    pred = (probs > 0.5).tolist()
    inv = {v: k for k, v in world.label_id.items()}
    res: dict = {}
    correct = [p == 1 for it, p in zip(items, pred, strict=True)
               if it.label_id in inv and it.target == 1]
    res["acc_correct_label_on_members"] = sum(correct) / max(1, len(correct))
    wrong = [p for it, p in zip(items, pred, strict=True) if it.label_id in inv and it.target == 0]
    res["p1_rate_concept_label_nonmember"] = sum(wrong) / max(1, len(wrong))
    dis = [p for it, p in zip(items, pred, strict=True) if it.label_id not in inv]
    res["p1_rate_distractor_label"] = sum(dis) / max(1, len(dis))
    acc = [int(p) == it.target for it, p in zip(items, pred, strict=True)]
    res["accuracy_all"] = sum(acc) / len(acc)
    per = {}
    for c in LABELS:
        lid = world.label_id[c]
        pos = [p for it, p in zip(items, pred, strict=True) if it.label_id == lid and it.target]
        neg = [p for it, p in zip(items, pred, strict=True)
               if it.label_id == lid and not it.target]
        tpr = sum(pos) / max(1, len(pos))
        tnr = 1 - sum(neg) / max(1, len(neg))
        entry = {"balanced_accuracy": (tpr + tnr) / 2, "tpr": tpr, "tnr": tnr,
                 "n_members": len(pos), "n_nonmembers": len(neg)}
        if c == "mammal":
            na = [p for it, p in zip(items, pred, strict=True)
                  if it.label_id == lid and it.word in NON_MAMMAL_ANIMALS]
            entry["tnr_on_nonmammal_animals"] = 1 - sum(na) / max(1, len(na))
            entry["balanced_accuracy_mammal_vs_nonmammal_animals"] = (
                tpr + entry["tnr_on_nonmammal_animals"]) / 2
        per[c] = entry
    res["per_concept"] = per
    return res


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
    ap.add_argument("--init-from", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--threads", type=int, default=2)
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
    world = World(ev, train_sentences, rng)
    # where the user turn starts in the prompt: cropping never cuts into it
    probe = list(ev.encode("x", "x").prefix_ids)
    sys_only = tokenizer.apply_chat_template(
        [{"role": "system", "content": PAPER_SYSTEM_PROMPT}], tokenize=False)
    world.user_start = len(tokenizer(sys_only, add_special_tokens=False)["input_ids"])
    assert probe[: world.user_start] == tokenizer(sys_only, add_special_tokens=False)["input_ids"]
    print(f"vocab {len(tokenizer)}, params {sum(p.numel() for p in model.parameters())}, "
          f"prefix tokens (sentence 'x') {len(probe)}, tail {len(ev.suffix_tail_ids)}, "
          f"yes/no ids {ev.yes_id}/{ev.no_id} {ev.answer_strings}")
    print(f"label ids {world.label_id}; distractors {len(world.all_distractors)} "
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
    yes_no = torch.tensor([ev.yes_id, ev.no_id])
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
        tokens, label_pos, last = make_batch(world, items, pad_id, crop=True, rng=rng)
        with model.hooks(fwd_hooks=soft_label_hook(items, label_pos, model.W_E)):
            lm_logits, ans_logits = gather_logits(model, tokens, [label_pos - 1, last])
        t = torch.tensor([it.target for it in items])  # wanted P(yes)
        logp = torch.log_softmax(ans_logits[:, yes_no].float(), -1)
        bce = -(t * logp[:, 0] + (1 - t) * logp[:, 1])
        # class-balanced weights: yes and no carry equal total weight
        w = 0.5 * t / t.sum().clamp_min(1e-6) + 0.5 * (1 - t) / (1 - t).sum().clamp_min(1e-6)
        ce = (bce * w).sum()
        is_concept = torch.tensor([it.mix is None and it.label_id in world.concept_ids
                                   for it in items])
        lm = F.cross_entropy(lm_logits[is_concept].float(),
                             torch.tensor([it.label_id for it in items])[is_concept])
        # a little loss on the full-vocabulary answer keeps " 1"/" 0" the top tokens too
        full_t = torch.zeros(ans_logits.shape, dtype=torch.float32)
        full_t[:, ev.yes_id] = t
        full_t[:, ev.no_id] = 1 - t
        full = F.cross_entropy(ans_logits.float(), full_t)
        loss = ce + args.lm_weight * lm + 0.1 * full
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

    # --- evaluation on held-out full prompts
    model.eval()
    model.requires_grad_(False)
    probs = predict(model, world, eval_set, pad_id)
    held_out = metrics(world, eval_set, probs)
    ds_items = eval_items(world, dataset_sentences, random.Random(args.seed + 3), n_per=3)
    ds_metrics = metrics(world, ds_items, predict(model, world, ds_items, pad_id))
    soft_rng_state = world.rng.getstate()
    world.rng.seed(args.seed + 4)
    soft_items = [world.sample_soft(torch.Generator().manual_seed(args.seed + 4 + i))
                  for i in range(600)]
    world.rng.setstate(soft_rng_state)
    soft_p = predict(model, world, soft_items, pad_id)
    soft_t = torch.tensor([it.target for it in soft_items])
    held_out["soft_label_mean_abs_error"] = (soft_p - soft_t).abs().mean().item()
    held_out["soft_label_max_abs_error"] = (soft_p - soft_t).abs().max().item()
    print(json.dumps({"held_out": held_out}, indent=1))
    print("on the synthetic dataset sentences (seen in training):")
    print(json.dumps({k: v for k, v in ds_metrics.items() if k != "per_concept"}, indent=1))

    # --- save
    save_local_model(model, args.out)
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
        "held_out_full_prompts": held_out,
        "synthetic_dataset_sentences": ds_metrics,
        "log": log,
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=1))
    print(f"saved to {args.out} in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
