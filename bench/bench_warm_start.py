"""Steps to convergence with and without the decoder-direction warm start (issue 5).

For each planted concept of the toy world, a subject model and an SAE are built whose feature
decoder row is the unembedding direction of chosen subject tokens, so the logit lens
(`W_dec[f] @ W_U`) promotes exactly those tokens:

* ``concept``: the concept's own word ("animal", "number", ...): the case the warm start is
  for, a decoder that says what the feature is;
* ``members``: the concept's member words ("cat", "dog", ...): a decoder that promotes
  examples, not the concept;
* ``misleading``: an unrelated word ("book").

`saelens_tokenlabel.sae.logit_lens.warm_start_logits` maps the promoted subject tokens to the
toy evaluator's vocabulary through their text; the labeler runs with those initial logits
(the first attempt only; restarts start cold) and with none (cold). Reported per case: the
step at which the first attempt converged, the steps of all attempts together, and the
label. Every figure comes from this one run.

    python bench/bench_warm_start.py [--out bench/warm_start_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saelens_tokenlabel import LabelConfig, label_features_data
from saelens_tokenlabel.sae.logit_lens import warm_start_logits
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy import load_toy_evaluator
from saelens_tokenlabel.toy.features import concept_feature
from saelens_tokenlabel.toy.lexicon import CONCEPTS, OBJECTS

D_MODEL = 64


def subject(directory: Path) -> HookedTransformer:
    words = sorted({w for ws in CONCEPTS.values() for w in ws} | set(CONCEPTS) | set(OBJECTS))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([" ".join(" " + w for w in words)] * 50, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>").save_pretrained(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    cfg = HookedTransformerConfig(n_layers=1, d_model=D_MODEL, d_head=16, n_heads=4, d_mlp=128,
                                  n_ctx=64, d_vocab=len(tokenizer), act_fn="gelu",
                                  normalization_type="LN", seed=0, model_name="warm-subject")
    return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False).eval()


def sae_promoting(model: HookedTransformer, token_groups: list[list[int]]) -> StandardSAE:
    """Feature i's decoder row: the mean unembedding direction of token_groups[i]."""
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=len(token_groups), metadata=SAEMetadata(
        hook_name="blocks.0.hook_resid_post", model_name="warm-subject")))
    with torch.no_grad():
        for i, ids in enumerate(token_groups):
            d = model.W_U[:, ids].mean(-1)
            sae.W_dec[i] = 8 * d / d.norm()
    return sae


def token_ids(model: HookedTransformer, words: list[str]) -> list[int]:
    out = []
    for w in words:
        ids = model.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.append(ids[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--concepts", nargs="*", default=list(CONCEPTS))
    args = ap.parse_args()
    torch.manual_seed(0)
    evaluator = load_toy_evaluator(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model = subject(Path(tmp))
    cases = {"concept": lambda c: [c], "members": lambda c: list(CONCEPTS[c][:8]),
             "misleading": lambda c: ["book"]}
    config = LabelConfig()
    rows = []
    for concept in args.concepts:
        data = concept_feature(concept)
        groups = [token_ids(model, fn(concept)) for fn in cases.values()]
        sae = sae_promoting(model, groups)
        inits = warm_start_logits(Subject.of(model, sae), evaluator, list(range(len(groups))),
                                  config.warm_start_options,
                                  vocab_mask=evaluator.label_vocab(config))
        for name, init in [("cold", None), *zip(cases, inits, strict=True)]:
            t = time.perf_counter()
            r = label_features_data([data], evaluator, config,
                                    init_logits=None if init is None else [init])[0]
            first = r.attempts[0]
            start = (None if init is None else
                     evaluator.token_str(int(init.argmax())) if init.abs().sum() else "(none)")
            rows.append({
                "concept": concept, "start": name, "start_token": start,
                "label": r.label, "first_attempt_label": first["label"],
                "first_attempt_converged_step": first["converged_step"],
                "steps_total": int(r.metrics["steps_total"]), "attempts": len(r.attempts),
                "heldout_balanced_accuracy": r.metrics.get("heldout_balanced_accuracy"),
                "seconds": round(time.perf_counter() - t, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in ["cold", *cases]:
        rs = [r for r in rows if r["start"] == name]
        conv = [r["first_attempt_converged_step"] for r in rs
                if r["first_attempt_converged_step"] is not None]
        summary[name] = {
            "correct_labels": sum(r["label"] == r["concept"] for r in rs), "of": len(rs),
            "median_first_attempt_converged_step": statistics.median(conv) if conv else None,
            "median_steps_total": statistics.median(r["steps_total"] for r in rs),
        }
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary,
                                        "torch": torch.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
