"""Offline builders for tests: a tokenizer trained in-test and tiny Llama-shaped models."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saelens_tokenlabel.evaluator.prompts import PAPER_SYSTEM_PROMPT

SPECIAL = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
LLAMA3_LIKE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] }}{% if not loop.last %}<|eot_id|>{% endif %}"
    "{% endfor %}"
)
CORPUS = [
    PAPER_SYSTEM_PROMPT,
    "The cat chased the mouse. A dog barked at the mailman. The bird sang a sweet song.",
    'The text is: "x". From this text, is the word "y" an example of the concept "z"?',
    "animal number color food mammal Rating: 1 Rating: 0 他一到，我们就开始",
]


def train_tokenizer(directory: Path, chat_template: str | None = LLAMA3_LIKE_TEMPLATE,
                    vocab_size: int = 400):
    """Byte-level BPE trained on a small corpus, saved and reloaded through AutoTokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[0],
                                   eos_token=SPECIAL[1], pad_token=SPECIAL[1])
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(directory))
    return AutoTokenizer.from_pretrained(str(directory))


def tiny_llama(tokenizer, dtype: torch.dtype = torch.float64, seed: int = 0,
               **overrides) -> HookedTransformer:
    """Llama-shaped (rotary, RMSNorm, gated SiLU MLP, GQA), random weights; `overrides`
    change the config (e.g. ``n_key_value_heads=None`` for multi-head attention)."""
    fields = dict(
        n_layers=2, d_model=32, d_head=8, n_heads=4, n_key_value_heads=2, d_mlp=64,
        n_ctx=512, d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, default_prepend_bos=False,
        dtype=dtype, seed=seed,
    )
    cfg = HookedTransformerConfig(**{**fields, **overrides})
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    # TL's init leaves logits tiny; scale up so that labels change the prediction measurably.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(4.0)
    return model.to(dtype)


def tiny_hf_llama(tokenizer, directory: Path, dtype: torch.dtype = torch.float64,
                  seed: int = 0) -> Path:
    """A Llama-shaped Hugging Face model (rotary, RMSNorm, gated SiLU MLP, GQA) with random
    weights, saved with ``save_pretrained`` beside `tokenizer` in `directory`: what
    ``TransformerBridge.boot_transformers(directory)`` boots offline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
                      tie_word_embeddings=False)
    # pad_token_id None: HF would zero that token's embedding (padding_idx), and the
    # tokenizer's pad token is its end-of-turn token, which the rating prompt uses.
    model = LlamaForCausalLM(cfg).to(dtype)
    # As in `tiny_llama`: scale up so that labels change the prediction measurably.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.mul_(4.0)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_bridge(directory: Path, dtype: torch.dtype = torch.float64):
    """`TransformerBridge.boot_transformers` on a folder from `tiny_hf_llama`."""
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(directory), device="cpu", dtype=dtype)


BRIDGE_ATOL = 1e-6
"""How closely two float64 passes of a TransformerBridge can agree: its attention takes the
softmax in float32 (TransformerLens 3.9, ``PositionEmbeddingsAttentionBridge.forward``) and
Hugging Face's RMSNorm normalises in float32, so two exact paths differ by about 1e-7."""


def exact(ev, atol: float) -> dict[str, float]:
    """``assert_close`` tolerances for `ev`: `atol` (and rtol 0) for a HookedTransformer,
    `BRIDGE_ATOL` (and rtol 1e-6) for a TransformerBridge."""
    if ev.backend.kind == "bridge":
        return {"rtol": 1e-6, "atol": max(atol, BRIDGE_ATOL)}
    return {"rtol": 0.0, "atol": atol}
