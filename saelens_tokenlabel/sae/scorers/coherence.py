"""Reflective coherence (the SelfIE labels' reward): does writing about the label make the
subject model's feature fire?

Each label is rendered into a few "write text about {label}" prompts; the subject model
continues each greedily for a few tokens; the SAE then reads the hook activations of prompt
and continuation, and the feature's largest activation on each text is compared with its
largest activation on a few fixed neutral sentences.

What is counted matters (`CoherenceConfig.count`). The prompt holds the label's own tokens,
so counting the prompt rewards a label whose *words* the feature fires on; the generated
tokens reward a label that makes the model *write* such text. A strong subject model needs
the generated part to be meaningful; an untrained or tiny one produces noise there, and only
the prompt carries signal (the planted tests in ``tests/sae/test_coherence.py`` rely on
exactly that, and say so). Special tokens (BOS, chat-template markers) are never counted.

Scores, per (feature, label):

* ``coherence_activation``: mean over the label's texts of the feature's max activation;
* ``coherence_neutral``: the same over the neutral texts (the baseline);
* ``coherence_hit_rate`` / ``coherence_neutral_hit_rate``: fraction of label / neutral texts
  where the max activation exceeds `CoherenceConfig.threshold`;
* ``coherence_ratio``: ``activation / max(neutral, activation / ratio_cap)``: the ratio of
  the two means, capped at `ratio_cap` so that a feature silent on neutral text gives a
  finite number (the cap, not infinity); 0 when the label texts never fire the feature,
  1 when they fire it as much as neutral text does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float

from ...evaluator.loading import tokenizer_of
from ...records.columns import COHERENCE_COLUMNS
from ...records.extra import FeatureExtra
from ...records.serial import Config
from ..activations import SaeEncoder, encode_contexts
from ..logit_lens import check_features
from ..subject import Subject, require_subject
from .registry import ScoreItem, ScoreUpdate, register_scorer

if TYPE_CHECKING:
    from ..hooks import SubjectModel

Count = Literal["prompt", "generated", "both"]

DEFAULT_TEMPLATES = (
    "Write a short text about {label}.",
    "Here is a sentence that heavily features {label}:",
    "Tell me something about {label}.",
)
DEFAULT_NEUTRAL_TEXTS = (
    "The meeting was moved to Tuesday afternoon.",
    "She opened the window and looked outside for a while.",
    "Please send the report by the end of the week.",
    "The train left the station a few minutes late.",
    "He wrote a short note and left it on the desk.",
)
SCORE_KEYS = ("coherence_ratio", "coherence_hit_rate", "coherence_activation",
              "coherence_neutral", "coherence_neutral_hit_rate")


@dataclass
class CoherenceConfig(Config):
    """How reflective coherence renders, generates and measures."""

    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    """Prompts asking the subject model to write about the label; each holds ``{label}``
    once. The label is written in stripped of surrounding whitespace."""
    max_new_tokens: int = 16
    """Greedy tokens generated after each prompt (0: score the prompts alone). Generation
    stops early at the tokenizer's EOS, which is not counted."""
    neutral_texts: tuple[str, ...] = DEFAULT_NEUTRAL_TEXTS
    """Fixed sentences giving the baseline activation (read as they are, not generated)."""
    count: Count = "both"
    """Tokens of a label text whose activations count: ``prompt`` (template and label),
    ``generated`` (the continuation only), or ``both``."""
    threshold: float = 0.0
    """The feature fires on a text when its max activation there exceeds this."""
    ratio_cap: float = 100.0
    """Largest `coherence_ratio` reported (reached when neutral text never fires it)."""
    prepend_bos: bool | None = None
    """Start each text with BOS. None: the SAE's ``metadata.prepend_bos``, else True.
    Ignored with `use_chat_template` (the template places its own BOS)."""
    use_chat_template: bool = False
    """Render each prompt as a user turn of the subject tokenizer's chat template, with the
    assistant header after it (for chat-tuned subject models)."""
    batch_size: int = 32
    """Texts per forward pass (generation and measurement)."""
    encode_batch_tokens: int = 2048
    """Tokens per `sae.encode` call."""

    def check(self) -> None:
        need = self.need
        self.templates = tuple(self.templates)
        self.neutral_texts = tuple(self.neutral_texts)
        need(len(self.templates) >= 1, "templates is empty; give at least one")
        for t in self.templates:
            need(t.count("{label}") == 1, f"template {t!r} must hold '{{label}}' exactly once")
        need(len(self.neutral_texts) >= 1, "neutral_texts is empty; give at least one")
        need(all(t.strip() for t in self.neutral_texts), "neutral_texts holds an empty text")
        need(self.max_new_tokens >= 0, f"max_new_tokens must be >= 0, got "
             f"{self.max_new_tokens}")
        self.choice("count", ("prompt", "generated", "both"))
        need(self.count == "prompt" or self.max_new_tokens > 0,
             f"count={self.count!r} needs generated tokens: set max_new_tokens >= 1")
        need(self.ratio_cap >= 1, f"ratio_cap must be >= 1, got {self.ratio_cap}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.encode_batch_tokens >= 1, "encode_batch_tokens must be >= 1")



@dataclass
class LabelText:
    """One text the feature is measured on: token ids and which positions count."""

    tokens: list[int]
    """Subject token ids (BOS, prompt, continuation)."""
    counted: tuple[int, int]
    """Positions [start, end) whose activations count (special tokens aside)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Template, prompt and continuation lengths."""


# ---------------------------------------------------------------------------- generation
@torch.no_grad()
def greedy_generate(
    model: SubjectModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
    batch_size: int = 32, eos_id: int | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), without the prompt, cut before EOS.

    Prompts of equal length run together, so no padding ever enters the model: the result
    is exactly what each prompt alone gives (argmax of the full forward pass, step by step).
    """
    out: list[list[int]] = [[] for _ in prompts]
    if max_new_tokens == 0:
        return out
    device = model.W_E.device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; nothing to continue")
        by_len.setdefault(len(p), []).append(i)
    n_ctx = int(model.cfg.n_ctx)
    for length, idx in by_len.items():
        if length + max_new_tokens > n_ctx:
            raise ValueError(f"A {length}-token prompt plus max_new_tokens={max_new_tokens} "
                             f"exceeds the subject model's n_ctx={n_ctx}. Shorten the "
                             "template or max_new_tokens.")
        for start in range(0, len(idx), batch_size):
            rows = idx[start : start + batch_size]
            toks = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long,
                                device=device)
            done = torch.zeros(len(rows), dtype=torch.bool, device=device)
            for _ in range(max_new_tokens):
                # An explicit all-ones mask stops TransformerLens from guessing padding from
                # token ids (BOS and pad are often the same token).
                logits = model(toks, attention_mask=torch.ones_like(toks),
                               return_type="logits")
                nxt = logits[:, -1].argmax(-1)
                for r, t in enumerate(nxt.tolist()):
                    if done[r]:
                        continue
                    if eos_id is not None and t == eos_id:
                        done[r] = True
                    else:
                        out[rows[r]].append(t)
                if bool(done.all()):
                    break
                toks = torch.cat([toks, nxt[:, None]], dim=1)
    return out


# ---------------------------------------------------------------------------- texts
def _bos_id(subject: Subject, config: CoherenceConfig) -> int | None:
    if config.use_chat_template:
        return None
    bos = config.prepend_bos if config.prepend_bos is not None else \
        subject.sae.cfg.metadata.prepend_bos
    if bos is None or bos:
        bos_id = subject.tokenizer.bos_token_id
        if bos_id is None:
            raise ValueError("The subject tokenizer has no bos_token, but BOS-prefixed texts "
                             "were asked for. Pass CoherenceConfig(prepend_bos=False).")
        return int(bos_id)
    return None


def _encode(model: SubjectModel, text: str, bos_id: int | None, chat: bool) -> list[int]:
    tok = tokenizer_of(model)
    if chat:
        if not getattr(tok, "chat_template", None):
            raise ValueError("CoherenceConfig(use_chat_template=True), but the subject "
                             "tokenizer has no chat template. Set use_chat_template=False.")
        text = str(tok.apply_chat_template([{"role": "user", "content": text}],
                                           tokenize=False, add_generation_prompt=True))
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    return ([bos_id] if bos_id is not None else []) + ids


def label_texts(
    subject: Subject, labels: Sequence[str], config: CoherenceConfig | None = None,
) -> dict[str, list[LabelText]]:
    """Per distinct label: its rendered prompts with their greedy continuations."""
    config = config or CoherenceConfig()
    model = subject.model
    bos_id = _bos_id(subject, config)
    uniq = list(dict.fromkeys(labels))
    prompts = [_encode(model, t.replace("{label}", lab), bos_id, config.use_chat_template)
               for lab in uniq for t in config.templates]
    gen = greedy_generate(model, prompts, config.max_new_tokens, config.batch_size,
                          tokenizer_of(model).eos_token_id) if config.count != "prompt" else \
        [[] for _ in prompts]
    span = {"prompt": lambda p, g: (0, p), "generated": lambda p, g: (p, p + g),
            "both": lambda p, g: (0, p + g)}[config.count]
    out: dict[str, list[LabelText]] = {lab: [] for lab in uniq}
    for n, (p, g) in enumerate(zip(prompts, gen, strict=True)):
        lab = uniq[n // len(config.templates)]
        out[lab].append(LabelText(p + g, span(len(p), len(g)),
                              {"template": config.templates[n % len(config.templates)],
                               "n_prompt": len(p), "n_generated": len(g)}))
    return out


# ---------------------------------------------------------------------------- measurement
def max_activations(
    subject: Subject, texts: Sequence[LabelText], features: Sequence[int],
    batch_size: int = 32, encode_batch_tokens: int = 2048,
) -> Float[torch.Tensor, "text feat"]:
    """Each feature's largest activation over each text's counted, non-special positions
    (0 where it never fires there)."""
    feats = torch.tensor(sorted(set(features)), dtype=torch.long)
    encoder = SaeEncoder(subject, feats, encode_batch_tokens)
    col = {int(f): i for i, f in enumerate(feats.tolist())}
    special = torch.tensor(sorted(subject.tokenizer.all_special_ids), dtype=torch.long)
    out = torch.zeros(len(texts), len(feats))
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        length = max(len(t.tokens) for t in batch)
        counted = torch.zeros(len(batch), length, dtype=torch.bool)
        for i, t in enumerate(batch):
            a, b = t.counted
            counted[i, a:b] = True
            ids = torch.tensor(t.tokens, dtype=torch.long)
            counted[i, : len(ids)] &= ~torch.isin(ids, special)
        locs, vals = encode_contexts(encoder, [t.tokens for t in batch], length)
        locs = locs.long()
        keep = counted[locs[:, 0], locs[:, 1]]
        locs, vals = locs[keep], vals[keep]
        cols = torch.tensor([col[int(f)] for f in locs[:, 2].tolist()], dtype=torch.long)
        flat = torch.zeros(len(batch) * len(feats))
        flat.scatter_reduce_(0, locs[:, 0] * len(feats) + cols, vals.float(), "amax")
        out[start : start + len(batch)] = flat.view(len(batch), len(feats))
    return out


def coherence_scores(label_max: Float[torch.Tensor, " n"], neutral_max: Float[torch.Tensor, " m"],
                     threshold: float, ratio_cap: float) -> dict[str, float]:
    """The scores of one (feature, label) from its per-text max activations."""
    act = float(label_max.mean())
    neutral = float(neutral_max.mean())
    ratio = act / max(neutral, act / ratio_cap) if act > 0 else 0.0
    return {
        "coherence_ratio": ratio,
        "coherence_hit_rate": float((label_max > threshold).float().mean()),
        "coherence_activation": act,
        "coherence_neutral": neutral,
        "coherence_neutral_hit_rate": float((neutral_max > threshold).float().mean()),
    }


def reflective_coherence(
    subject: Subject, features: Sequence[int], labels: Sequence[str],
    config: CoherenceConfig | None = None,
) -> list[dict[str, float]]:
    """Reflective coherence of ``labels[i]`` for ``features[i]`` (see the module docstring
    for the scores). All labels' texts share the generation and measurement batches, and a
    label given for several features is generated once."""
    subject = require_subject(subject, "reflective_coherence")
    config = config or CoherenceConfig()
    feats = check_features(features, subject.d_sae)
    if len(labels) != len(feats):
        raise ValueError(f"Got {len(feats)} features but {len(labels)} labels; pass one label "
                         "per feature.")
    labels = [str(lab).strip() for lab in labels]
    empty = [f for f, lab in zip(feats, labels, strict=True) if not lab]
    if empty:
        raise ValueError(f"Feature(s) {empty} have an empty label; reflective coherence needs "
                         "label text. Leave unlabeled features out.")
    if not feats:
        return []
    texts = label_texts(subject, labels, config)
    # Neutral text is plain text even for a chat model, so it gets the usual BOS.
    bos_id = _bos_id(subject, dataclasses.replace(config, use_chat_template=False))
    neutral = [_encode(subject.model, t, bos_id, False) for t in config.neutral_texts]
    neutral_texts = [LabelText(ids, (0, len(ids))) for ids in neutral]
    flat = [t for ts in texts.values() for t in ts]
    acts = max_activations(subject, flat + neutral_texts, feats, config.batch_size,
                           config.encode_batch_tokens)
    col = {f: i for i, f in enumerate(sorted(set(feats)))}
    row_of = {}
    n = 0
    for lab, ts in texts.items():
        row_of[lab] = (n, n + len(ts))
        n += len(ts)
    neutral_acts = acts[n:]
    out = []
    for f, lab in zip(feats, labels, strict=True):
        a, b = row_of[lab]
        out.append(coherence_scores(acts[a:b, col[f]], neutral_acts[:, col[f]],
                                    config.threshold, config.ratio_cap))
    return out


class CoherenceScorer:
    """Reflective coherence as a scorer (`registry.Scorer`): for labeled features only."""

    name = "coherence"
    config_type = CoherenceConfig
    columns = COHERENCE_COLUMNS
    labeled_only = True

    def score(self, subject: Subject, items: Sequence[ScoreItem], config: Config
              ) -> list[ScoreUpdate]:
        assert isinstance(config, CoherenceConfig)
        scores = reflective_coherence(subject, [i.feature for i in items],
                                      [i.result.label for i in items], config)
        # The settings the scores were measured with, beside them (the Neuronpedia details).
        extra = FeatureExtra(coherence_config=config.to_dict())
        return [ScoreUpdate(dict(s), extra) for s in scores]


register_scorer(CoherenceScorer())
