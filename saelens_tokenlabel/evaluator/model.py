"""The evaluator: a HookedTransformer with a chat template, and the rating prompt in token ids.

A rating prompt is split at the label into two parts:

* the *prefix*: every token before the label (system prompt, text, word, ``concept "``).
  It depends on the example only, never on the label, so it can be run once and cached.
* the *suffix*: ``label_length`` label slots, then the rest (``"?``, end of turn, assistant
  header, ``Rating:``). It is the same token sequence for every example.

The label's place is found from character offsets in the rendered chat text: the label field
is rendered as a unique placeholder, which must occur exactly once.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool

from ..records.errors import EvaluatorError, PromptTooLongError
from .backend import Backend, backend_of
from .prompts import PromptTemplate

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from ..records.config import LabelConfig

DEFAULT_PLACEHOLDER = "\u27e6LABEL\u27e7"  # ⟦LABEL⟧: brackets no real text is likely to hold
PLAIN_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}{% for m in messages %}"
    "{{ m['role'] | capitalize }}: {{ m['content'] }}{% if not loop.last %}\n\n{% endif %}"
    "{% endfor %}"
)
"""A chat template for base models (no template of their own): ``System: ...``, ``User:
...``, ``Assistant: Rating:`` turns. ``Evaluator(model, chat_template=PLAIN_CHAT_TEMPLATE)``."""


@dataclass(frozen=True)
class EncodedExample:
    """One rating prompt in token ids, split at the label."""

    prefix_ids: tuple[int, ...]
    """Token ids before the label (includes BOS and the system prompt)."""
    sentence: str
    """The text shown to the evaluator."""
    word: str
    """The word asked about."""


@dataclass
class Evaluator:
    """Wraps a HookedTransformer whose tokenizer has a chat template.

    ``stl.Evaluator(model)`` renders the paper's prompt through the model's own chat template.
    """

    model: HookedTransformer
    """The evaluator LLM (frozen here: its parameters get ``requires_grad_(False)``)."""
    template: PromptTemplate = field(default_factory=PromptTemplate)
    """The rating prompt. The default is the paper's, verbatim."""
    chat_template: str | None = None
    """A Jinja chat template to use instead of the tokenizer's own."""
    placeholder: str = DEFAULT_PLACEHOLDER
    """Text rendered in place of the label to find its character offsets."""
    name: str | None = None
    """Name recorded in results; defaults to ``model.cfg.model_name``."""

    def __post_init__(self) -> None:
        tok = getattr(self.model, "tokenizer", None)
        if tok is None:
            raise EvaluatorError(
                "The evaluator model has no tokenizer. Load it with "
                "HookedTransformer.from_pretrained(...) or pass tokenizer=... to HookedTransformer."
            )
        if self.chat_template is None and not getattr(tok, "chat_template", None):
            name = getattr(self.model.cfg, "model_name", "the evaluator")
            raise EvaluatorError(
                f"The tokenizer of {name!r} has no chat template, so the rating prompt cannot "
                "be rendered. Use an instruction-tuned model (e.g. "
                "meta-llama/Meta-Llama-3-8B-Instruct), or pass one: "
                "stl.Evaluator(model, chat_template='<jinja template>'); for a base model, "
                "chat_template=saelens_tokenlabel.evaluator.model.PLAIN_CHAT_TEMPLATE writes plain "
                "'System: / User: / Assistant:' turns. The prompt's text itself is set with "
                "template=stl.PromptTemplate(...)."
            )
        self.tokenizer = tok
        self.backend: Backend = backend_of(self.model)
        """Runs the model: a HookedTransformer or a TransformerBridge (`backend.py`)."""
        self._spelling: dict[str, str | None] = {}
        self._encoded: dict[tuple[str, str], EncodedExample] = {}
        self._label_vocab: dict[tuple[bool, bool], torch.Tensor] = {}
        self.model.requires_grad_(False)
        self.model.eval()
        if self.name is None:
            self.name = str(getattr(self.model.cfg, "model_name", "evaluator"))
        pre, post = self._split_rendered("s", "w")
        self._post_text = post
        self.suffix_tail_ids: tuple[int, ...] = tuple(self._tokenize(post))
        self.yes_id, self.no_id, self.answer_strings = self._find_answer_ids(post)

    # ----------------------------------------------------------------- rendering
    def _tokenize(self, text: str) -> list[int]:
        # The rendered chat text already holds BOS and the special tokens as text.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render(self, sentence: str, word: str, label: str) -> str:
        """The full rating prompt as text, with ``label`` written in."""
        pre, post = self._split_rendered(sentence, word)
        return pre + label + post

    def _split_rendered(self, sentence: str, word: str) -> tuple[str, str]:
        for what, text in (("text", sentence), ("word", word)):
            if self.placeholder in text:
                raise EvaluatorError(
                    f"The {what} {text[:80]!r} contains the label placeholder "
                    f"{self.placeholder!r}, so the label position would be ambiguous. Pass "
                    "Evaluator(..., placeholder='<some string absent from your data>')."
                )
        user = self.template.user.format(sentence=sentence, word=word, label=self.placeholder)
        messages = []
        if self.template.system:
            messages.append({"role": "system", "content": self.template.system})
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": self.template.assistant_prefix})
        kwargs = {"chat_template": self.chat_template} if self.chat_template else {}
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, continue_final_message=True, **kwargs
            )
        except Exception as err:  # jinja2 errors, raise_exception(...) in the template
            raise EvaluatorError(
                f"The evaluator's chat template cannot render the rating prompt "
                f"({type(err).__name__}: {err}). If it has no system role, pass "
                "template=stl.PromptTemplate(system='') (the instructions then go without a "
                "system turn); otherwise pass chat_template='<jinja template>' to Evaluator."
            ) from err
        start = text.find(self.placeholder)
        if start < 0 or text.find(self.placeholder, start + 1) >= 0:
            raise EvaluatorError(
                f"The label placeholder occurs {text.count(self.placeholder)} times in the "
                "rendered prompt; it must occur exactly once. Does the system prompt or chat "
                "template contain it? Pass Evaluator(..., placeholder='<another string>')."
            )
        if not text.rstrip().endswith(self.template.assistant_prefix.strip()):
            raise EvaluatorError(
                "The chat template does not end the prompt with the assistant prefix "
                f"{self.template.assistant_prefix!r}; the prediction would be read at the wrong "
                "token. Pass a chat template that supports continue_final_message."
            )
        return text[:start], text[start + len(self.placeholder) :]

    def _find_answer_ids(self, post: str) -> tuple[int, int, tuple[str, str]]:
        base = self._tokenize(post)
        tried = []
        # " 1" first: the system prompt writes 'Rating: 1'. Tokenizers that split digits from
        # the space (Llama-3) make "1" the token right after "Rating:".
        for yes, no in ((" 1", " 0"), ("1", "0")):
            ids = []
            for answer in (yes, no):
                full = self._tokenize(post + answer)
                new = full[len(base) :]
                if full[: len(base)] == base and len(new) == 1:
                    ids.append(new[0])
                tried.append(f"{answer!r} -> {self.tokenizer.convert_ids_to_tokens(new)}")
            if len(ids) == 2 and ids[0] != ids[1]:
                return ids[0], ids[1], (yes, no)
        raise EvaluatorError(
            "Neither ' 1'/' 0' nor '1'/'0' is a single token right after "
            f"{self.template.assistant_prefix!r} for this tokenizer ({'; '.join(tried)}). "
            "The two-way prediction needs one token per answer: use another evaluator, or a "
            "PromptTemplate whose assistant_prefix ends where the answer is one token."
        )

    # ----------------------------------------------------------------- encoding
    def encode(self, sentence: str, word: str) -> EncodedExample:
        """Tokenize the part of the rating prompt before the label."""
        # Remembered: the same random examples serve every feature of a run, and rendering
        # the chat template is most of the cost of preparing a batch.
        key = (sentence, word)
        if key in self._encoded:
            return self._encoded[key]
        pre, post = self._split_rendered(sentence, word)
        if post != self._post_text:
            raise EvaluatorError(
                "The prompt after the label depends on the example; the template must put "
                "{sentence} and {word} before {label}."
            )
        encoded = EncodedExample(tuple(self._tokenize(pre)), sentence, word)
        if len(self._encoded) < 1 << 16:
            self._encoded[key] = encoded
        return encoded

    @property
    def n_ctx(self) -> int | None:
        """The evaluator's context: the most tokens one forward pass reads (None: its config
        does not say)."""
        n = getattr(self.model.cfg, "n_ctx", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_fits(self, example: EncodedExample, label_length: int,
                   feature: str | int = "feature") -> None:
        """A `PromptTooLongError` when the rating prompt of `example` with `label_length`
        label tokens is longer than the evaluator's context (`n_ctx`): checked before any
        forward pass, which would otherwise fail deep inside the model."""
        n_ctx = self.n_ctx
        n = len(example.prefix_ids) + label_length + len(self.suffix_tail_ids)
        if n_ctx is None or n <= n_ctx:
            return
        text = example.sentence if len(example.sentence) <= 60 else \
            example.sentence[:40] + " ... " + example.sentence[-15:]
        raise PromptTooLongError(
            f"Feature {feature!r}: the rating prompt of the example {example.word!r} in "
            f"{text!r} is {n} tokens, longer than the evaluator's context of {n_ctx} (its "
            f"text and word take {len(example.prefix_ids)}). Shorten the example texts: in an "
            "SAE run, fewer context tokens around each example (ExampleConfig window_before / "
            "window_after; CLI --window-before / --window-after); with FeatureData, shorter "
            "sentences.")

    def suffix_ids(self, label_length: int = 1, fill_id: int = 0) -> list[int]:
        """Suffix token ids: ``label_length`` slots holding ``fill_id``, then the fixed tail."""
        return [fill_id] * label_length + list(self.suffix_tail_ids)

    def prompt_ids(self, example: EncodedExample, label_ids: list[int]) -> list[int]:
        """The whole rating prompt with a hard label written in as token ids."""
        return list(example.prefix_ids) + list(label_ids) + list(self.suffix_tail_ids)

    # ----------------------------------------------------------------- vocabulary
    def spelling_problem(self, text: str) -> str | None:
        """Why the evaluator's tokenizer cannot write `text` faithfully, else None.

        A tokenizer without byte fallback maps characters outside its alphabet to its unknown
        token, or drops them; the evaluator would then rate a word it never saw. Differences
        that only normalise (whitespace, Unicode compatibility forms, case) are not problems.
        """
        memo = self._spelling
        if text in memo:
            return memo[text]
        ids = self._tokenize(text)
        unk = self.tokenizer.unk_token
        problem = None
        if (unk is not None and unk not in text
                and self.tokenizer.unk_token_id in ids):
            problem = f"it maps part of {text!r} to its unknown token {unk!r}"
        else:
            back = self.tokenizer.decode(ids, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            if _normalised(back) != _normalised(text):
                problem = f"{text!r} comes back from its tokens as {back!r}"
        if len(memo) < 1 << 16:
            memo[text] = problem
        return problem

    def can_spell(self, text: str) -> bool:
        """True when the evaluator's tokens write `text` without loss (`spelling_problem`)."""
        return self.spelling_problem(text) is None

    @property
    def d_vocab(self) -> int:
        return int(self.model.cfg.d_vocab)

    def token_str(self, token_id: int) -> str:
        return self.tokenizer.decode([int(token_id)])

    def label_vocab(self, config: LabelConfig) -> Bool[torch.Tensor, " d_vocab"]:
        """The tokens a label of `config` may use (`vocab_mask` with its `exclude_special`
        and `words_only`), computed once per setting (``words_only`` decodes the whole
        vocabulary)."""
        key = (config.exclude_special, config.words_only)
        if key not in self._label_vocab:
            self._label_vocab[key] = self.vocab_mask(*key)
        return self._label_vocab[key]

    def vocab_mask(
        self, exclude_special: bool = True, words_only: bool = False
    ) -> Bool[torch.Tensor, " d_vocab"]:
        """Tokens a label may use.

        Rows of W_E past the tokenizer's size (padding) are always excluded. ``exclude_special``
        drops special and added control tokens; ``words_only`` also drops tokens with no letter
        and byte fragments that decode to U+FFFD alone.
        """
        mask = torch.zeros(self.d_vocab, dtype=torch.bool)
        n = min(len(self.tokenizer), self.d_vocab)
        mask[:n] = True
        if exclude_special:
            special = set(self.tokenizer.all_special_ids)
            special |= {
                i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special
            }
            for i in special:
                if 0 <= i < self.d_vocab:
                    mask[i] = False
        if words_only:
            for i in range(n):
                if mask[i]:
                    s = self.token_str(i)
                    if "\ufffd" in s or not any(c.isalpha() for c in s):
                        mask[i] = False
        if not mask.any():
            raise EvaluatorError("The vocabulary mask excludes every token; relax it.")
        return mask


def _normalised(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())

