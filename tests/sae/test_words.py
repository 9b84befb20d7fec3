"""Cross-tokenizer words: byte fragments merge into whole characters; spaces handled alike."""

from __future__ import annotations

from saelens_tokenlabel.sae.words import REPLACEMENT, WordDecoder


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_chinese_byte_tokens_merge_into_whole_characters(subject_tokenizer):
    tok = subject_tokenizer
    text = "他一到，我们就开始"
    ids = _ids(tok, text)
    assert len(ids) == 3 * len(text)  # the subject tokenizer splits each character in bytes
    assert all(REPLACEMENT in tok.decode([i]) for i in ids)  # alone, each is U+FFFD
    dec = WordDecoder(tok)
    for pos in range(len(ids)):
        span = dec.word_at(ids, pos)
        assert span.word == text[pos // 3], (pos, span)
        assert (span.start, span.end) == (pos - pos % 3, pos - pos % 3 + 3)
        assert span.merged and span.complete
        rec = dec.record(ids, span)
        assert rec["subject_ids"] == ids[span.start : span.end] and rec["merged"]
        assert len(rec["subject_tokens"]) == 3


def test_mixed_scripts_and_emoji(subject_tokenizer):
    tok = subject_tokenizer
    ids = _ids(tok, "The cat 吃 é 😀!")
    dec = WordDecoder(tok)
    words = {dec.word_at(ids, p).word for p in range(len(ids))}
    assert {"The", "cat", "吃", "é", "😀", "!"} <= words
    assert not any(REPLACEMENT in w for w in words)


def test_leading_space_is_stripped_or_kept_consistently(subject_tokenizer):
    tok = subject_tokenizer
    ids = _ids(tok, "The cat 猫")
    cat = next(p for p in range(len(ids)) if tok.decode([ids[p]]) == " cat")
    strip, keep = WordDecoder(tok, strip=True), WordDecoder(tok, strip=False)
    assert strip.word_at(ids, cat).word == "cat"
    assert keep.word_at(ids, cat).word == " cat"
    # The merged character keeps (or loses) its leading space the same way.
    last = len(ids) - 1
    assert strip.word_at(ids, last).word == "猫"
    assert keep.word_at(ids, last).text.strip() == "猫"
    assert keep.word_at(ids, last).word == keep.word_at(ids, last).text


def test_genuine_replacement_character_does_not_swallow_neighbours(subject_tokenizer):
    tok = subject_tokenizer
    ids = _ids(tok, "cat \ufffd dog")
    dec = WordDecoder(tok)
    for p in range(len(ids)):
        span = dec.word_at(ids, p)
        if REPLACEMENT not in tok.decode([ids[p]]):
            assert (span.start, span.end) == (p, p + 1)
        assert "cat" not in span.text or REPLACEMENT not in span.text


def test_window_never_cuts_a_character(subject_tokenizer):
    tok = subject_tokenizer
    text = "我们喜欢猫和狗"
    ids = _ids(tok, text)
    dec = WordDecoder(tok)
    for pos in range(len(ids)):
        span = dec.word_at(ids, pos)
        for before in range(0, 6):
            for after in range(0, 6):
                shown = dec.window(ids, span, before, after, set())
                assert REPLACEMENT not in shown
                assert span.word in shown and shown in text


def test_window_leaves_out_special_tokens(subject_tokenizer):
    tok = subject_tokenizer
    ids = [tok.bos_token_id] + _ids(tok, "The cat slept.")
    dec = WordDecoder(tok)
    span = dec.word_at(ids, 2)
    assert dec.window(ids, span, 10, 10, {tok.bos_token_id}) == "The cat slept."
