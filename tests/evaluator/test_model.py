from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saelens_tokenlabel import Evaluator, EvaluatorError, PromptTemplate
from saelens_tokenlabel.evaluator.model import DEFAULT_PLACEHOLDER
from saelens_tokenlabel.evaluator.prompts import PAPER_SYSTEM_PROMPT

from ..builders import LLAMA3_LIKE_TEMPLATE, tiny_llama, train_tokenizer


def test_renders_paper_prompt_verbatim(tiny_evaluator):
    text = tiny_evaluator.render("The cat sat.", "cat", "animal")
    assert PAPER_SYSTEM_PROMPT in text
    assert ('The text is: "The cat sat.". From this text, is the word "cat" an example of the '
            'concept "animal"?') in text
    assert text.endswith("Rating:")


def test_label_slot_found_from_offsets(tiny_evaluator):
    """prefix + label + suffix tail tokenizes back to exactly the rendered prompt."""
    ev = tiny_evaluator
    ex = ev.encode("The cat sat.", "cat")
    label_ids = ev.tokenizer("animal", add_special_tokens=False)["input_ids"]
    ids = ev.prompt_ids(ex, label_ids)
    assert ev.tokenizer.decode(ids) == ev.render("The cat sat.", "cat", "animal")
    # The prefix ends right before the label: with the opening quote of "{label}".
    assert ev.tokenizer.decode(list(ex.prefix_ids)).endswith('concept "')
    assert ev.tokenizer.decode(list(ev.suffix_tail_ids)).startswith('"?')


def test_answer_ids_are_the_tokens_after_rating(tiny_evaluator):
    ev = tiny_evaluator
    tail = ev.tokenizer.decode(list(ev.suffix_tail_ids))
    for answer, tid in zip(ev.answer_strings, (ev.yes_id, ev.no_id), strict=True):
        full = ev.tokenizer(tail + answer, add_special_tokens=False)["input_ids"]
        assert full == list(ev.suffix_tail_ids) + [tid]
    assert ev.answer_strings in ((" 1", " 0"), ("1", "0"))


def test_custom_template(tokenizer):
    tpl = PromptTemplate(system="", user='Text: {sentence}. Word: {word}. Concept: {label}?')
    ev = Evaluator(tiny_llama(tokenizer), template=tpl)
    assert ev.render("a b", "b", "c").count("Concept: c?") == 1


def test_no_chat_template_is_a_clear_error(tmp_path):
    tok = train_tokenizer(tmp_path, chat_template=None)
    with pytest.raises(EvaluatorError, match="no chat template"):
        Evaluator(tiny_llama(tok))


def test_answers_not_single_tokens_is_a_clear_error(tmp_path):
    # A word-level tokenizer that knows no digits: "1" and "0" both become [UNK].
    vocab = {w: i for i, w in enumerate(
        ["[UNK]", "<s>", "</s>", "Rating", ":", "x", '"', "?", "a", "b"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="[UNK]", pad_token="</s>")
    fast.chat_template = LLAMA3_LIKE_TEMPLATE.replace("<|start_header_id|>", "").replace(
        "<|end_header_id|>", "").replace("<|eot_id|>", "")
    fast.save_pretrained(str(tmp_path))
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(EvaluatorError, match="single token"):
        Evaluator(tiny_llama(tok))


def test_placeholder_in_text_is_a_clear_error(tiny_evaluator):
    with pytest.raises(EvaluatorError, match="placeholder"):
        tiny_evaluator.encode(f"a sentence with {DEFAULT_PLACEHOLDER} inside", "sentence")
    with pytest.raises(EvaluatorError, match="placeholder"):
        tiny_evaluator.encode("fine", DEFAULT_PLACEHOLDER)


def test_template_must_have_fields():
    with pytest.raises(ValueError, match="{label}"):
        PromptTemplate(user="{sentence} {word}")
    with pytest.raises(ValueError, match="exactly once"):
        PromptTemplate(user="{sentence} {word} {label} {label}")


def test_vocab_mask(tiny_evaluator):
    ev = tiny_evaluator
    m = ev.vocab_mask()
    assert not m[ev.tokenizer.bos_token_id]
    special = {i for i, t in ev.tokenizer.added_tokens_decoder.items() if t.special}
    assert special == {0, 1, 2, 3}  # BOS, end of turn and the two header tokens
    assert not m[sorted(special)].any()
    assert m.sum() == len(ev.tokenizer) - len(special)
    words = ev.vocab_mask(words_only=True)
    assert words.sum() < m.sum()
    for i in torch.nonzero(words).flatten().tolist():
        s = ev.token_str(i)
        assert "\ufffd" not in s and any(c.isalpha() for c in s)


def test_evaluator_is_frozen(tiny_evaluator):
    assert not any(p.requires_grad for p in tiny_evaluator.model.parameters())
