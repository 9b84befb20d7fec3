"""Reflective coherence on the planted SAE.

The planted subject model is untrained and its SAE reads ``blocks.0.hook_resid_pre`` (the
token embedding), so a feature fires on its planted *tokens*, whatever the context. Two
consequences, tested below rather than hidden:

* the true label beats a wrong one because the prompt holds the label's own token (`count`
  including ``prompt``): "cat" puts " cat" in the text, and the animal feature fires on it;
  "animal" is no animal *token*, so on this model it does not fire the feature either;
* the untrained model's greedy continuations are noise (they may well hold animal words), so
  the generated part is tested with a model whose unembedding is planted to write one chosen
  token.
"""

from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel.sae.scorers.coherence import (
    CoherenceConfig,
    coherence_scores,
    greedy_generate,
    label_texts,
    reflective_coherence,
)
from saelens_tokenlabel.sae.subject import Subject

from .planted import ANIMAL_FEATURE, DIGIT_FEATURE, planted_sae, single_token, subject_model

PROMPT_ONLY = CoherenceConfig(count="prompt")


def _act(model, sae, token_id, feature):
    """The planted feature's activation on one token (the hook is the embedding)."""
    with torch.no_grad():
        return float(torch.relu(model.W_E[token_id] @ sae.W_enc[:, feature]
                                + sae.b_enc[feature]))


@pytest.fixture(scope="module")
def writes(subject_tokenizer):
    """Subject models whose greedy continuation is one planted token, repeated."""
    def build(word: str):
        model = subject_model(subject_tokenizer)
        with torch.no_grad():
            model.b_U[single_token(subject_tokenizer, word)] = 1e4
        return model
    return {w: build(w) for w in (" dog", " table")}


def test_true_concept_beats_wrong_one_on_the_planted_sae(subject, sae, subject_tokenizer):
    feats = [ANIMAL_FEATURE, ANIMAL_FEATURE, ANIMAL_FEATURE, DIGIT_FEATURE, DIGIT_FEATURE]
    labels = ["cat", "blue", "animal", "7", "cat"]
    got = reflective_coherence(Subject.of(subject, sae), feats, labels, PROMPT_ONLY)
    cat, blue, animal, seven, digit_cat = got
    # Every template holds " cat" once: the max over each prompt is exactly its activation.
    want = _act(subject, sae, single_token(subject_tokenizer, " cat"), ANIMAL_FEATURE)
    assert cat["coherence_activation"] == pytest.approx(want, abs=1e-5) and want > 0
    assert cat["coherence_hit_rate"] == 1.0 and cat["coherence_neutral"] == 0.0
    assert cat["coherence_ratio"] == PROMPT_ONLY.ratio_cap  # silent on neutral text
    assert blue["coherence_activation"] == blue["coherence_hit_rate"] == 0.0
    assert blue["coherence_ratio"] == 0.0
    assert animal["coherence_activation"] == 0.0  # a concept word is not a member token
    assert seven["coherence_hit_rate"] == 1.0 and digit_cat["coherence_hit_rate"] == 0.0
    assert seven["coherence_ratio"] > digit_cat["coherence_ratio"]


def test_generated_tokens_are_counted(writes, sae, subject_tokenizer):
    dog_writer, table_writer = writes[" dog"], writes[" table"]
    dog = _act(dog_writer, sae, single_token(subject_tokenizer, " dog"), ANIMAL_FEATURE)
    # A model that writes " dog" after anything: any label's continuation fires the feature...
    gen = reflective_coherence(Subject.of(dog_writer, sae), [ANIMAL_FEATURE], ["blue"],
                               CoherenceConfig(count="generated", max_new_tokens=3))[0]
    assert gen["coherence_activation"] == pytest.approx(dog, abs=1e-5)
    assert gen["coherence_hit_rate"] == 1.0
    # ...which only the generated part sees.
    assert reflective_coherence(Subject.of(dog_writer, sae), [ANIMAL_FEATURE], ["blue"],
                                PROMPT_ONLY)[0]["coherence_hit_rate"] == 0.0
    # A model that writes neutral words: prompt and continuation together, true beats wrong.
    both = CoherenceConfig(count="both", max_new_tokens=3)
    cat, blue = reflective_coherence(Subject.of(table_writer, sae), [ANIMAL_FEATURE] * 2, ["cat",
                                                                                           "blue"],
                                     both)
    assert cat["coherence_hit_rate"] == 1.0 and blue["coherence_hit_rate"] == 0.0
    texts = label_texts(Subject.of(table_writer, sae), ["cat"], both)["cat"]
    table = single_token(subject_tokenizer, " table")
    assert all(t.tokens[-3:] == [table] * 3 and t.counted == (0, len(t.tokens)) for t in texts)


def test_greedy_loop_matches_transformer_lens_generate(subject, subject_tokenizer):
    prompts = [subject_tokenizer(t, add_special_tokens=False)["input_ids"]
               for t in ("The cat sat", "I ate 3 apples and", "Blue")]
    ours = greedy_generate(subject, prompts, max_new_tokens=5, batch_size=2)
    for p, g in zip(prompts, ours, strict=True):
        ref = subject.generate(torch.tensor([p]), max_new_tokens=5, do_sample=False,
                               use_past_kv_cache=False, stop_at_eos=False, verbose=False)
        assert g == ref[0, len(p):].tolist()


def test_batching_does_not_change_scores(subject, sae):
    feats, labels = [ANIMAL_FEATURE, DIGIT_FEATURE, 5], ["dog", "42", "cheese"]
    together = reflective_coherence(Subject.of(subject, sae), feats, labels,
                                    CoherenceConfig(max_new_tokens=4, batch_size=16))
    alone = [reflective_coherence(Subject.of(subject, sae), [f], [lab],
                                  CoherenceConfig(max_new_tokens=4, batch_size=1))[0]
             for f, lab in zip(feats, labels, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-5)


def test_ratio_is_the_capped_ratio_of_means():
    s = coherence_scores(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.5, 0.0]), 0.0, 100.0)
    assert s["coherence_activation"] == 1.0 and s["coherence_neutral"] == 0.25
    assert s["coherence_ratio"] == 4.0
    assert s["coherence_hit_rate"] == pytest.approx(2 / 3)
    assert s["coherence_neutral_hit_rate"] == 0.5
    assert coherence_scores(torch.tensor([3.0]), torch.zeros(2), 0.0, 50.0)[
        "coherence_ratio"] == 50.0
    assert coherence_scores(torch.zeros(3), torch.zeros(2), 0.0, 50.0)["coherence_ratio"] == 0.0
    assert coherence_scores(torch.tensor([1.0]), torch.tensor([1.0]), 1.0, 50.0)[
        "coherence_hit_rate"] == 0.0  # "above" the threshold is strict


def test_bad_input_says_what_to_change(subject):
    with pytest.raises(ValueError, match="exactly once"):
        CoherenceConfig(templates=("Write about things.",))
    with pytest.raises(ValueError, match="max_new_tokens >= 1"):
        CoherenceConfig(count="generated", max_new_tokens=0)
    with pytest.raises(ValueError, match="one label per feature"):
        reflective_coherence(Subject.of(subject, planted_sae()), [0, 1], ["cat"])
    with pytest.raises(ValueError, match="empty label"):
        reflective_coherence(Subject.of(subject, planted_sae()), [0], ["  "])
    assert CoherenceConfig.from_dict(CoherenceConfig(threshold=0.5).to_dict()) == \
        CoherenceConfig(threshold=0.5)
