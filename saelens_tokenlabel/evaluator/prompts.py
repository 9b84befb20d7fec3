"""The rating prompt, kept apart from the code that renders and tokenizes it.

The default is the prompt of Schulz & Fallows (arXiv 2504.00754, §2.1), word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_SYSTEM_PROMPT = (
    "Your task is to assess if a given word from some text represents a specified concept "
    "in the context of the text. This could be a concept related to the meaning of the word, "
    "or its structural usage in the text. Provide a rating based on this assessment: If the "
    "word represents the concept, respond with 'Rating: 1'. If the word does not represent "
    "the concept, respond with 'Rating: 0'. Think carefully about if the concept applies to "
    "the word in the context of the text. Be confident."
)

PAPER_USER_TEMPLATE = (
    'The text is: "{sentence}". From this text, is the word "{word}" an example of the '
    'concept "{label}"?'
)

PAPER_ASSISTANT_PREFIX = "Rating:"


@dataclass(frozen=True)
class PromptTemplate:
    """The three parts of a rating prompt. Rendered through the evaluator's chat template."""

    system: str = PAPER_SYSTEM_PROMPT
    """System message. Empty string: no system turn (for chat templates without one)."""

    user: str = PAPER_USER_TEMPLATE
    """User message, a `str.format` template with the fields `{sentence}`, `{word}`, `{label}`."""

    assistant_prefix: str = PAPER_ASSISTANT_PREFIX
    """The start of the assistant turn; the prediction is read at its last token."""

    def __post_init__(self) -> None:
        for field_name in ("sentence", "word", "label"):
            if "{" + field_name + "}" not in self.user:
                raise ValueError(
                    f"PromptTemplate.user must contain the field {{{field_name}}}; got "
                    f"{self.user!r}. Write the template with {{sentence}}, {{word}} and {{label}}."
                )
        if self.user.count("{label}") != 1:
            raise ValueError(
                "PromptTemplate.user must contain {label} exactly once: the label positions "
                f"are spliced in there. Got {self.user!r}."
            )
        if not self.assistant_prefix.strip():
            raise ValueError(
                "PromptTemplate.assistant_prefix must not be empty: the prediction is read at "
                "its last token (the paper uses 'Rating:')."
            )
