"""What the g-SAE's gradient-aware activation cache costs against the forward-only one.

The same subject model, corpus, hook and SAE weights, twice: as a TopK SAE (forward-only: the
model runs up to the hook's block, `stop_at_layer`) and as a g-SAE (the whole model runs to its
next-token loss and backpropagates to the hook's activations). Each cache is built from scratch
`--repeats` times; the script prints the median seconds and tokens/s of each and their ratio.

    python bench/bench_gsae_cache.py                  # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelens_tokenlabel.sae import CacheConfig, build_activation_cache
from saelens_tokenlabel.sae.gsae import gsae_classes
from saelens_tokenlabel.sae.subject import Subject
from saelens_tokenlabel.toy.planted import toy_sentences, train_subject_tokenizer


def subject(tokenizer, layers: int, d_model: int) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=layers, d_model=d_model, d_head=32, n_heads=d_model // 32,
        n_key_value_heads=max(1, d_model // 64), d_mlp=4 * d_model, n_ctx=256,
        d_vocab=len(tokenizer), act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, default_prepend_bos=False,
        dtype=torch.float32, seed=0, model_name="bench-subject")
    return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False).eval()


def saes(d_model: int, d_sae: int, k: int, hook: str) -> tuple[TopKSAE, object]:
    meta = SAEMetadata(hook_name=hook, context_size=64, prepend_bos=True,
                       model_name="bench-subject")
    topk = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=d_sae, k=k, metadata=meta))
    gsae_cls, gsae_cfg = gsae_classes()
    gsae = gsae_cls(gsae_cfg(d_in=d_model, d_sae=d_sae, k=k, metadata=meta))
    gsae.load_state_dict(topk.state_dict())
    return topk, gsae


def timed_build(model, sae, corpus, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            build_activation_cache(Subject.of(model, sae), corpus, None,
                                   CacheConfig(cache_dir=Path(tmp), batch_size=16),
                                   progress=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hook-layer", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--sentences", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    # TransformerLens re-reads the tokenizer from its folder: keep it for the run.
    tok = train_subject_tokenizer(Path(tempfile.mkdtemp(prefix="bench_subject_tok_")))
    model = subject(tok, args.layers, args.d_model)
    hook = f"blocks.{args.hook_layer}.hook_resid_pre"
    topk, gsae = saes(args.d_model, args.d_sae, args.k, hook)
    corpus = toy_sentences(args.sentences, seed=0)
    n_tokens = sum(len(tok(s)["input_ids"]) + 1 for s in corpus)
    t_fwd = timed_build(model, topk, corpus, args.repeats)
    t_grad = timed_build(model, gsae, corpus, args.repeats)
    print(f"subject: {args.layers} layers, d_model {args.d_model}; SAE at {hook}, d_sae "
          f"{args.d_sae}, k {args.k}; {len(corpus)} contexts, {n_tokens} tokens; "
          f"{torch.get_num_threads()} CPU threads")
    print("| cache | seconds | tokens/s |\n|---|---|---|")
    for name, t in (("TopK, forward to the hook only", t_fwd),
                    ("g-SAE, forward to the loss + backward to the hook", t_grad)):
        print(f"| {name} | {t:.2f} | {n_tokens / t:.0f} |")
    print(f"gradient-aware / forward-only: {t_grad / t_fwd:.1f}x")


if __name__ == "__main__":
    main()
