"""Feature data: texts split into tokens, each with the feature's activation.

`FeatureData` is the paper's setting: per-token activations, explicit. Turning it into rated
examples (text, word, active?) is `FeatureData.examples`, with the activation threshold kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import FeatureDataError

if TYPE_CHECKING:
    from .config import LabelConfig

Sentence = list[tuple[str, float]]

SYNTHETIC_NAMES = ("animals", "mammals", "chinese", "numbers", "mammal_text", "palindromes")

# A run of letters/digits with its leading whitespace, one CJK character, or one other symbol.
_TOKEN_RE = re.compile(r"\s*(?:[\u4e00-\u9fff]|[^\W_\u4e00-\u9fff]+|[^\s\w]|_)", re.UNICODE)


@dataclass(frozen=True)
class Example:
    """One rating: is `word` (a token of `sentence`) an example of the label?"""

    sentence: str
    word: str
    activation: float
    active: bool
    sentence_index: int
    token_index: int
    group: str | int = 0
    """The context the example comes from (its sentence, or the SAE context window): examples of
    one group always land in the same split (`splits.split_examples`)."""


@dataclass(frozen=True)
class Examples:
    """Rated examples plus the threshold that made the targets."""

    items: list[Example]
    threshold: float
    threshold_rule: str

    @property
    def n_active(self) -> int:
        return sum(e.active for e in self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class PreparedFeature:
    """One feature's rated examples under a labeling config, checked labelable
    (`FeatureData.prepare`): what the labeler reads, made once per feature and carried along
    (in a `LabelBatch`, to a worker)."""

    name: str | int
    """The feature."""
    examples: Examples
    """Its rated examples and the threshold that made their targets."""


@dataclass
class FeatureData:
    """Tokenised texts with one feature's activation per token.

    A sentence is a list of ``(token_text, activation)``; its text is the concatenation of the
    token texts, so leading spaces live in the token text (`" cat"`).
    """

    sentences: list[Sentence]
    name: str | int = "feature"
    metadata: dict[str, Any] = field(default_factory=dict)
    rated: list[tuple[str, str, float]] | None = None
    """Explicit ``(text, word, activation)`` examples; when set, they replace "every token of
    every sentence" (used for SAE features: top contexts plus chosen negatives)."""
    groups: list[str | int] | None = None
    """With `rated`: the context each example comes from (e.g. the corpus context of an SAE
    example, shared by an active word and its near-misses). None: its text."""

    def __post_init__(self) -> None:
        # Built directly, the data gets the checks of the `from_*` constructors: a NaN
        # activation would otherwise count as inactive and label silently.
        self.sentences = [_checked_sentence(si, sent) for si, sent in enumerate(self.sentences)]
        if self.rated is not None:
            self.rated = [_checked_example(i, item) for i, item in enumerate(self.rated)]
            if self.groups is not None and len(self.groups) != len(self.rated):
                raise FeatureDataError(
                    f"Feature {self.name!r}: {len(self.groups)} groups for {len(self.rated)} "
                    "rated examples; pass one group per example (or groups=None).")

    @classmethod
    def from_examples(
        cls, examples: Sequence[tuple[str, str, float] | tuple[str, str, float, str | int]],
        name: str | int = "feature", **metadata: Any,
    ) -> FeatureData:
        """Build from explicit ``(text, word, activation)`` triples (the word is one token of
        the text, as shown to the evaluator), or ``(text, word, activation, group)``: the
        context an example comes from, kept on one side of every split."""
        if not examples:
            raise FeatureDataError(
                f"Feature {name!r} has no examples. Pass a non-empty list of "
                "(text, word, activation) triples."
            )
        rated: list[tuple[str, str, float]] = []
        groups: list[str | int] = []
        for i, item in enumerate(examples):
            if not (isinstance(item, list | tuple) and len(item) in (3, 4)):
                raise FeatureDataError(f"Example {i} is {item!r}; expected (text, word, "
                                       "activation) or (text, word, activation, group).")
            groups.append(item[3] if len(item) == 4 else item[0])
            rated.append((item[0], item[1], item[2]))
        # Each example is checked by the constructor (`_checked_example`).
        return cls([], name=name, metadata=dict(metadata), rated=rated, groups=groups)

    @classmethod
    def from_sentences(
        cls, sentences: list[Sentence], name: str | int = "feature", **metadata: Any
    ) -> FeatureData:
        """Build from ``[[(token_text, activation), ...], ...]``, checking every value."""
        if not isinstance(sentences, list | tuple) or len(sentences) == 0:
            raise FeatureDataError(
                "FeatureData.from_sentences got no sentences. Pass a non-empty list of "
                "sentences, each a list of (token_text, activation) pairs."
            )
        # Each sentence is checked by the constructor (`_checked_sentence`).
        return cls(list(sentences), name=name, metadata=dict(metadata))

    @classmethod
    def from_marked_text(cls, lines: list[str], name: str | int = "feature", **metadata: Any
                         ) -> FeatureData:
        """Build from lines where active spans are wrapped in ``**...**`` (the paper's bold)."""
        sentences = []
        for line in lines:
            if line.count("**") % 2:
                raise FeatureDataError(f"Unclosed ** marker in line {line!r}.")
            # Strip the markers first, keeping which characters were inside them, so the
            # whitespace before a marked word stays that word's leading space.
            plain, active_chars = [], []
            for i, part in enumerate(line.split("**")):
                plain.append(part)
                active_chars.extend([i % 2 == 1] * len(part))
            text = "".join(plain)
            tokens: Sentence = []
            for m in _TOKEN_RE.finditer(text):
                active = any(active_chars[j] for j in range(m.start(), m.end())
                             if not text[j].isspace())
                tokens.append((m.group(0), 1.0 if active else 0.0))
            if tokens:
                sentences.append(tokens)
        return cls.from_sentences(sentences, name=name, **metadata)

    @classmethod
    def synthetic(cls, name: str) -> FeatureData:
        """One of the paper's six synthetic datasets (Appendix A.1, Figs. 5-10)."""
        if name not in SYNTHETIC_NAMES:
            raise KeyError(
                f"No synthetic dataset {name!r}; choose one of {', '.join(SYNTHETIC_NAMES)}."
            )
        text = resources.files("saelens_tokenlabel").joinpath("data", f"{name}.txt").read_text(
            encoding="utf-8"
        )
        header: dict[str, str] = {}
        lines = []
        for line in text.splitlines():
            if line.startswith("#"):
                key, _, value = line[1:].partition(":")
                header[key.strip()] = value.strip()
            elif line.strip():
                lines.append(line)
        header.pop("name", None)
        return cls.from_marked_text(lines, name=name, **header)

    # ---------------------------------------------------------------- examples
    def threshold_for(self, threshold: float | None, fraction: float) -> tuple[float, str]:
        if threshold is not None:
            return float(threshold), f"activation > {threshold:g} (absolute)"
        if self.rated is not None:
            peak = max((a for _, _, a in self.rated), default=0.0)
        else:
            peak = max((a for s in self.sentences for _, a in s), default=0.0)
        if fraction == 0:
            return 0.0, f"activation > 0 (the feature fires; max {peak:g})"
        return fraction * peak, f"activation > {fraction:g} * max ({peak:g})"

    def examples(
        self, threshold: float | None = None, fraction: float = 0.0, strip_word: bool = True
    ) -> Examples:
        """Every non-blank token as a rating example, active iff its activation > threshold."""
        thr, rule = self.threshold_for(threshold, fraction)
        items = []
        if self.rated is not None:
            groups = self.groups or [text for text, _, _ in self.rated]
            for i, ((text, word, act), g) in enumerate(zip(self.rated, groups, strict=True)):
                w = word.strip() if strip_word else word
                if w.strip():
                    items.append(Example(text, w, act, act > thr, i, 0, g))
            return Examples(items, thr, rule)
        for si, sent in enumerate(self.sentences):
            text = "".join(t for t, _ in sent)
            for ti, (tok, act) in enumerate(sent):
                word = tok.strip() if strip_word else tok
                if not word.strip():
                    continue
                items.append(Example(text, word, act, act > thr, si, ti, si))
        return Examples(items, thr, rule)

    def prepare(self, config: LabelConfig) -> PreparedFeature:
        """The rated examples under `config`'s threshold and word rule, checked labelable (a
        `FeatureDataError` saying what to change otherwise)."""
        ex = self.examples(config.threshold, config.threshold_fraction, config.strip_word)
        self.check_labelable(ex)
        return PreparedFeature(self.name, ex)

    def check_labelable(self, ex: Examples) -> None:
        if len(ex) == 0:
            raise FeatureDataError(
                f"Feature {self.name!r} has no examples (no non-blank tokens). Pass sentences "
                "with at least one word."
            )
        n_act = ex.n_active
        if n_act == 0:
            raise FeatureDataError(
                f"Feature {self.name!r} has no active examples under the threshold "
                f"({ex.threshold_rule}); it is dead on this data. Add text where it fires, or "
                "lower LabelConfig.threshold / threshold_fraction."
            )
        if n_act == len(ex):
            raise FeatureDataError(
                f"Feature {self.name!r} is active on every example ({ex.threshold_rule}), so "
                "there is nothing to tell apart. Add text where it does not fire, or raise the "
                "threshold."
            )


def _checked_sentence(si: int, sent: Any) -> Sentence:
    """Sentence `si`: a non-empty list of (token text, finite activation) pairs, the
    activations as floats; else a `FeatureDataError` naming the token."""
    if not isinstance(sent, list | tuple) or len(sent) == 0:
        raise FeatureDataError(
            f"Sentence {si} is empty or not a list; each sentence must be a non-empty "
            "list of (token_text, activation) pairs."
        )
    row: Sentence = []
    for ti, pair in enumerate(sent):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise FeatureDataError(
                f"Sentence {si}, token {ti} is {pair!r}; expected a (token_text, activation) "
                "pair."
            )
        text, act = pair
        if not isinstance(text, str):
            raise FeatureDataError(
                f"Sentence {si}, token {ti}: token text must be a str, got {text!r}."
            )
        row.append((text, _finite(act, f"Sentence {si}, token {ti} ({text!r})")))
    return row


def _checked_example(i: int, item: Any) -> tuple[str, str, float]:
    """Rated example `i`: (text, word, finite activation); else a `FeatureDataError`."""
    if not (isinstance(item, list | tuple) and len(item) == 3):
        raise FeatureDataError(f"Example {i} is {item!r}; expected (text, word, activation).")
    text, word, act = item
    if not isinstance(text, str) or not isinstance(word, str):
        raise FeatureDataError(f"Example {i}: text and word must be str, got {tuple(item)!r}.")
    return text, word, _finite(act, f"Example {i} ({word!r})")


def _finite(act: Any, where: str) -> float:
    try:
        value = float(act)
    except (TypeError, ValueError):
        raise FeatureDataError(f"{where}: activation {act!r} is not a number.") from None
    if not math.isfinite(value):
        raise FeatureDataError(f"{where}: activation is {value}. Replace NaN/inf activations "
                               "(e.g. with 0) before labeling.")
    return value
