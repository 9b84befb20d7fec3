"""Benchmark one labeling step: prefix-cached versus full-prompt, and feature batching.

Every figure is measured in this one run, on the same examples and the same label logits:

* steps/s and examples/s of the cached path and the full-prompt path, the ratio, and the
  largest gradient difference between them (the two must agree);
* features/hour with 1, 8 and 64 features batched into each step (500 steps a feature);
* peak memory; on GPU, model FLOP utilisation (MFU) against the bf16 dense peak.

CPU (default): a tiny Llama-shaped evaluator. GPU: `--shape llama3-8b` builds a
Llama-3-8B-shaped evaluator (32 layers, d_model 4096, 32 heads, 8 KV heads, d_mlp 14336,
vocab 128256, rotary base 5e5) with random weights: the same FLOPs as the real model.
The prompt is the paper's, rendered through the toy evaluator's chat template.

    python bench/bench_labeling.py                     # CPU, tiny
    python bench/bench_labeling.py --shape llama3-8b --device cuda --out bench/h200.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import time
from functools import partial
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer

from saelens_tokenlabel import Evaluator, FeatureData, LabelConfig
from saelens_tokenlabel.config import PerformanceConfig
from saelens_tokenlabel.optimize import Batch, StepContext
from saelens_tokenlabel.optimize import step as engine_step
from saelens_tokenlabel.toy import TOY_EVALUATOR_DIR

SHAPES = {
    "tiny": dict(n_layers=4, d_model=128, n_heads=4, n_key_value_heads=2, d_head=32, d_mlp=384,
                 rotary_base=10000),
    "llama3-8b": dict(n_layers=32, d_model=4096, n_heads=32, n_key_value_heads=8, d_head=128,
                      d_mlp=14336, d_vocab=128256, rotary_base=500000),
}
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
LOSS = LabelConfig()
"""Loss weights of the measured step (λ_acc 1, λ_ent 0.2, λ_kl 0.2, two-way prediction)."""


def build_evaluator(shape: str, device: str, dtype: torch.dtype) -> Evaluator:
    tok = AutoTokenizer.from_pretrained(str(TOY_EVALUATOR_DIR))
    dims = dict(SHAPES[shape])
    dims.setdefault("d_vocab", len(tok))
    cfg = HookedTransformerConfig(
        **dims, n_ctx=2048, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, default_prepend_bos=False,
        dtype=dtype, device=device, seed=0, init_weights=shape == "tiny",
    )
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=True)
    if shape != "tiny":
        # Random weights of the right scale; initialising 8B parameters on the host is slow.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
    return Evaluator(model, name=f"random-{shape}")


def examples(evaluator: Evaluator, n: int) -> tuple[list, torch.Tensor]:
    data = FeatureData.synthetic("animals")
    items = data.examples().items[:n]
    enc = [evaluator.encode(e.sentence, e.word) for e in items]
    return enc, torch.tensor([float(e.active) for e in items])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step(ctx: StepContext, v: torch.Tensor, batch: Batch) -> torch.Tensor:
    """One optimisation step's work, as an attempt runs it (`optimize.step`, the default
    `LabelConfig`'s loss weights, one pass): forward, loss, backward to v. Returns v's
    gradient."""
    v.grad = None
    engine_step(ctx, v, batch, LOSS)
    return v.grad


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=10, help="rows per feature per step")
    ap.add_argument("--features", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps-per-feature", type=int, default=500)
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    args = ap.parse_args()

    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    ev = build_evaluator(args.shape, device, dtype)
    n_params = sum(p.numel() for p in ev.model.parameters())
    n_examples = max(args.features) * args.batch_size
    enc, targets = examples(ev, n_examples)
    t0 = time.perf_counter()
    cached = StepContext.build(ev, enc, PerformanceConfig(eval_batch_size=32))
    sync(device)
    cache_s = time.perf_counter() - t0
    cache = cached.cache
    # The full-prompt path: the same examples and prefix pass, the whole prompt every step.
    full = dataclasses.replace(cached, performance=PerformanceConfig(use_cache=False))
    prefix_len = sum(len(e.prefix_ids) for e in enc) / len(enc)
    suffix_len = len(ev.suffix_ids(1))
    v_dtype = torch.promote_types(torch.float32, dtype)
    gen = torch.Generator().manual_seed(0)

    def make(n_feat):
        v = (0.1 * torch.randn(n_feat, 1, ev.d_vocab, generator=gen)).to(device, v_dtype)
        v.requires_grad_(True)
        rows = torch.arange(n_feat * args.batch_size) % len(enc)
        row_feature = torch.arange(n_feat).repeat_interleave(args.batch_size).to(device)
        return v, Batch(rows, row_feature, targets[rows].to(device), list(range(n_feat)))

    # 1. cached versus full prompt, one feature, same rows and v.
    v, batch = make(1)
    g_cached = step(cached, v, batch).clone()
    g_full = step(full, v, batch).clone()
    grad_diff = float((g_cached - g_full).abs().max() / g_full.abs().max().clamp_min(1e-30))
    t_cached = timed(partial(step, cached, v, batch), device, args.repeats)
    t_full = timed(partial(step, full, v, batch), device, args.repeats)

    # 2. feature batching.
    batching = []
    for n_feat in args.features:
        v, batch = make(n_feat)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t = timed(partial(step, cached, v, batch), device, args.repeats)
        rows = batch.rows
        row = {
            "features": n_feat,
            "rows_per_step": len(rows),
            "step_s": t,
            "features_per_hour": n_feat * 3600 / (t * args.steps_per_feature),
            "peak_memory_mb": peak_memory_mb(device),
        }
        if device.startswith("cuda"):
            # forward + backward to the inputs: ~4 FLOPs per parameter per suffix token, plus
            # attention over the cached prefix (4 * 2 * layers * d_model * prefix per token).
            tokens = len(rows) * suffix_len
            attn = 8 * ev.model.cfg.n_layers * ev.model.cfg.d_model * prefix_len * tokens
            flops = 4 * n_params * tokens + attn
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
            row["tflops"] = flops / t / 1e12
            row["mfu"] = row["tflops"] / peak if peak else None
            row["s_per_500_step_feature"] = t * args.steps_per_feature / n_feat
        batching.append(row)

    out = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": str(dtype),
        "params": n_params,
        "prefix_tokens_mean": prefix_len,
        "shared_prefix_tokens": cache.shared_len,
        "suffix_tokens": suffix_len,
        "prefix_cache_build_s": cache_s,
        "kv_bytes_per_example": cache.bytes_per_example(),
        "rows_per_step": args.batch_size,
        "cached": {"step_s": t_cached, "steps_per_s": 1 / t_cached,
                   "examples_per_s": args.batch_size / t_cached},
        "full_prompt": {"step_s": t_full, "steps_per_s": 1 / t_full,
                        "examples_per_s": args.batch_size / t_full},
        "speedup_cached_vs_full": t_full / t_cached,
        "max_rel_grad_diff_cached_vs_full": grad_diff,
        "feature_batching": batching,
    }
    print(f"{out['shape']} evaluator, {n_params / 1e6:.1f}M params, {out['device']}, {dtype}")
    print(f"prompt: {prefix_len:.0f} prefix tokens ({cache.shared_len} shared), "
          f"{suffix_len} suffix tokens; batch {args.batch_size}")
    print("| path | step (ms) | steps/s | examples/s |\n|---|---|---|---|")
    for name in ("full_prompt", "cached"):
        r = out[name]
        print(f"| {name} | {1e3 * r['step_s']:.1f} | {r['steps_per_s']:.1f} | "
              f"{r['examples_per_s']:.0f} |")
    print(f"cached vs full: {out['speedup_cached_vs_full']:.1f}x faster, "
          f"max relative gradient difference {grad_diff:.1e}")
    mem = "peak GPU mem (MB)" if device.startswith("cuda") else "process peak RSS (MB)"
    print(f"| features per step | step (ms) | features/hour (500 steps each) | {mem} |"
          + (" MFU |" if device.startswith("cuda") else "") + "\n|---|---|---|---|"
          + ("---|" if device.startswith("cuda") else ""))
    for r in batching:
        mfu = f" {r['mfu']:.1%} |" if r.get("mfu") else ""
        print(f"| {r['features']} | {1e3 * r['step_s']:.1f} | {r['features_per_hour']:.0f} | "
              f"{r['peak_memory_mb']:.0f} |{mfu}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
