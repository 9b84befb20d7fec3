"""Benchmark the labeling step: full prompt, TransformerLens's cached step, the lean cached
step, and the floor; a whole attempt with its fixed costs; the vocabulary's share; feature
batching.

Every figure is measured in this one run, on the same examples and the same label logits
(the step times as medians over interleaved rounds, so that a busy machine slows all paths
alike):

* **full prompt**: the whole prompt through TransformerLens every step;
* **cached (TransformerLens)**: the suffix over the prefix KV cache, through TL's modules;
* **cached**: the default step (`optimize.step`, the lean `suffix.SuffixRunner`);
* **floor**: the suffix forward and backward alone: the lean forward on prefix keys/values
  gathered beforehand, a fixed label embedding and a plain loss, no sampler, soft label, KL or
  bookkeeping;
* **attempt**: one whole 100-step attempt with its fixed costs (the prefix pass over every
  example, and scoring the hard label on them), against 100 full-prompt steps;
* **vocabulary**: the step's work on the vocabulary alone (softmax, masks, `p @ W_E`,
  entropy, KL, the trajectory's top-k; forward and backward) as a share of the step;
* features/hour with 1, 8 and 64 features batched into each step; on GPU, MFU.

CPU (default): the toy evaluator (`--shape toy`); `--vocab llama3` swaps in the real Llama-3
tokenizer (128,256 tokens, from ``../shared/llama3_tokenizer``) on a small random-weight
Llama-shaped model (`--shape tiny`). GPU: `--shape llama3-8b` builds a Llama-3-8B-shaped
evaluator (32 layers, d_model 4096, 32 heads, 8 KV heads, d_mlp 14336, vocab 128256, rotary
base 5e5) with random weights: the same FLOPs as the real model.

    python bench/bench_labeling.py                         # CPU, toy evaluator, batch 16
    python bench/bench_labeling.py --vocab llama3          # CPU, 128k vocabulary
    python bench/bench_labeling.py --shape llama3-8b --device cuda --out bench/h200.json

`--family` measures evaluator families instead (random weights on the `tiny` shape, 4 layers,
d_model 128, the toy vocabulary; `FAMILIES`): the same step table and whole attempt for each,
then one summary table with the issue's goals (the attempt >= 6x the plain method, the lean
step within 1.5x of the floor). Feature batching is left out.

    python bench/bench_labeling.py --family all          # bench/families_cpu.txt
    python bench/bench_labeling.py --family gemma2 gpt2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from saelens_tokenlabel import Evaluator, FeatureData, LabelConfig
from saelens_tokenlabel.descent import Batch, FeatureJob, StepContext, finish, run_attempt
from saelens_tokenlabel.descent import step as engine_step
from saelens_tokenlabel.descent.labeler import feature_jobs
from saelens_tokenlabel.descent.search import optimize_labels
from saelens_tokenlabel.evaluator.forward import PrefixCache
from saelens_tokenlabel.records.config import PerformanceConfig
from saelens_tokenlabel.records.result import LabelResult
from saelens_tokenlabel.toy import TOY_EVALUATOR_DIR, load_toy_evaluator

ROOT = Path(__file__).resolve().parents[1]
LLAMA3_TOKENIZER = ROOT.parent / "shared" / "llama3_tokenizer" / "tokenizer.json"
SHAPES = {
    "small": dict(n_layers=8, d_model=512, n_heads=8, n_key_value_heads=4, d_head=64,
                  d_mlp=1536, rotary_base=500000),
    "tiny": dict(n_layers=4, d_model=128, n_heads=4, n_key_value_heads=2, d_head=32, d_mlp=384,
                 rotary_base=10000),
    "llama3-8b": dict(n_layers=32, d_model=4096, n_heads=32, n_key_value_heads=8, d_head=128,
                      d_mlp=14336, d_vocab=128256, rotary_base=500000),
}
GEMMA = dict(d_head=48, act_fn="gelu_pytorch_tanh", normalization_type="RMS",
             use_normalization_before_and_after=True, use_local_attn=True, final_rms=True)
FAMILIES: dict[str, dict] = {
    "llama": dict(original_architecture="LlamaForCausalLM", rotary_base=500000),
    "gemma2": dict(GEMMA, original_architecture="Gemma2ForCausalLM", window_size=4096,
                   attn_types=["local", "global"] * 2, attn_scores_soft_cap=50.0,
                   output_logits_soft_cap=30.0),
    "gemma3": dict(GEMMA, original_architecture="Gemma3ForCausalLM", n_key_value_heads=1,
                   window_size=512, attn_types=["local"] * 3 + ["global"], use_qk_norm=True,
                   rotary_base=1000000, rotary_base_local=10000),
    "gpt2": dict(original_architecture="GPT2LMHeadModel", normalization_type="LN",
                 positional_embedding_type="standard", act_fn="gelu_new", gated_mlp=False,
                 n_key_value_heads=None, d_mlp=4 * SHAPES["tiny"]["d_model"]),
    "qwen2": dict(original_architecture="Qwen2ForCausalLM", rotary_base=1000000),
    "mistral": dict(original_architecture="MistralForCausalLM", rotary_base=1000000,
                    use_local_attn=True, window_size=4096, attn_types=["local"] * 4),
    "unnormalised-1layer": dict(n_layers=1, normalization_type=None),
}
"""Config fields of each family on the `tiny` shape (random weights), as TransformerLens's
``convert_hf_model_config`` sets them; d_head 48 is Gemma's d_head apart from d_model/n_heads.
The sliding windows are the real models' (Gemma 2 and Mistral 4096, Gemma 3 512): on these
prompts they do not bite, so the prefix cache shares the system prompt as it does for the real
models. Qwen 2's QKV biases are TransformerLens's (the bias add runs, zero or not)."""
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
LOSS = LabelConfig()
"""Loss weights of the measured step (λ_acc 1, λ_ent 0.2, λ_kl 0.2, two-way prediction)."""


# ------------------------------------------------------------------ evaluators
def tokenizer(vocab: str):
    tok = AutoTokenizer.from_pretrained(str(TOY_EVALUATOR_DIR))
    if vocab == "own":
        return tok
    if not LLAMA3_TOKENIZER.is_file():
        raise SystemExit(f"--vocab llama3 needs {LLAMA3_TOKENIZER}")
    llama = PreTrainedTokenizerFast(tokenizer_file=str(LLAMA3_TOKENIZER),
                                    bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                    pad_token="<|eot_id|>")
    llama.chat_template = tok.chat_template  # the toy's is Llama-3-Instruct's, verbatim
    # TransformerLens needs a tokenizer loaded from a folder (it re-loads it with a BOS).
    folder = Path(tempfile.mkdtemp(prefix="llama3_tokenizer_"))
    llama.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def build_evaluator(shape: str, vocab: str, device: str, dtype: torch.dtype) -> Evaluator:
    if shape == "toy":
        return load_toy_evaluator(device)
    tok = tokenizer(vocab)
    dims = dict(SHAPES[shape])
    dims.setdefault("d_vocab", len(tok))
    cfg = HookedTransformerConfig(
        **dims, n_ctx=2048, act_fn="silu", normalization_type="RMS",
        positional_embedding_type="rotary", gated_mlp=True, default_prepend_bos=False,
        dtype=dtype, device=device, seed=0, init_weights=shape != "llama3-8b",
    )
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=True)
    if shape == "llama3-8b":
        # Random weights of the right scale; initialising 8B parameters on the host is slow.
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
    return Evaluator(model, name=f"random-{shape}")


def build_family(family: str, device: str, dtype: torch.dtype) -> Evaluator:
    """A random-weight evaluator of `family` (`FAMILIES`) on the toy tokenizer."""
    tok = tokenizer("own")
    fields = dict(SHAPES["tiny"], d_vocab=len(tok), n_ctx=2048, act_fn="silu",
                  normalization_type="RMS", positional_embedding_type="rotary",
                  gated_mlp=True, default_prepend_bos=False, dtype=dtype, device=device,
                  seed=0)
    cfg = HookedTransformerConfig(**{**fields, **FAMILIES[family]})
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=True)
    return Evaluator(model, name=f"random-{family}")


def examples(evaluator: Evaluator, n: int) -> tuple[list, list, torch.Tensor]:
    items = FeatureData.synthetic("animals").examples().items
    items = (items * (n // len(items) + 1))[:n]
    enc = [evaluator.encode(e.sentence, e.word) for e in items]
    return items, enc, torch.tensor([float(e.active) for e in items])


# ------------------------------------------------------------------ timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rounds(fns: dict, device: str, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, the functions interleaved round by round."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Setup:
    """The examples, contexts and label logits every measurement shares."""

    def __init__(self, ev: Evaluator, n_examples: int, batch: int, device: str) -> None:
        self.ev, self.batch, self.device = ev, batch, device
        self.items, self.enc, self.targets = examples(ev, n_examples)
        t0 = time.perf_counter()
        self.ctx = StepContext.build(ev, self.enc, PerformanceConfig(eval_batch_size=32))
        sync(device)
        self.cache_s = time.perf_counter() - t0
        # The whole prompt every step: a cache that keeps no keys/values (`prompt_logits`
        # switches on the cache, not on the config).
        self.full = StepContext.build(ev, self.enc, PerformanceConfig(eval_batch_size=32,
                                                                      use_cache=False))
        assert not self.full.cache.keep_kv
        self.v_dtype = torch.promote_types(torch.float32, ev.model.W_E.dtype)
        self.gen = torch.Generator().manual_seed(0)

    def make(self, n_feat: int) -> tuple[torch.Tensor, Batch]:
        ev = self.ev
        v = (0.1 * torch.randn(n_feat, 1, ev.d_vocab, generator=self.gen)).to(self.device,
                                                                              self.v_dtype)
        rows = torch.arange(n_feat * self.batch) % len(self.enc)
        row_feature = torch.arange(n_feat).repeat_interleave(self.batch).to(self.device)
        return v.requires_grad_(True), Batch(rows, row_feature,
                                             self.targets[rows].to(self.device),
                                             list(range(n_feat)))


def step_fn(ctx: StepContext, v: torch.Tensor, batch: Batch, topk: int = 0):
    """One optimisation step's work, as an attempt runs it; with `topk`, also the
    trajectory's top-k of p."""
    def run():
        v.grad = None
        terms = engine_step(ctx, v, batch, LOSS)
        if topk:
            terms.p.topk(topk, dim=-1)
    return run


def floor_fn(ctx: StepContext, batch: Batch):
    """The suffix forward and backward alone (module docstring), or None without the lean
    forward."""
    runner = ctx.cache.runner
    if runner is None:
        return None
    kv = ctx.cache.gather(batch.rows)
    e = ctx.W_E[:1][None].expand(len(batch.rows), 1, -1).detach().clone().requires_grad_(True)
    yes, no = ctx.evaluator.yes_id, ctx.evaluator.no_id

    cols = torch.tensor([yes, no], device=e.device)

    def run():
        e.grad = None
        out = runner.logits(kv, e, cols)  # the answer tokens, as the step reads them
        (out[:, 0] - out[:, 1]).sum().backward()
    return run


def vocab_fn(ctx: StepContext, v: torch.Tensor, batch: Batch):
    """The step with the evaluator's pass replaced by a free stand-in: what is left is the
    work on the vocabulary (softmax, masks, p @ W_E, entropy, KL, top-k; and backward)."""
    def stand_in(ctx, rows, embeds, columns=None):
        width = ctx.evaluator.d_vocab if columns is None else len(columns)
        return embeds.sum((1, 2))[:, None].expand(-1, width)
    return step_fn(dataclasses.replace(ctx, pass_logits=stand_in), v, batch,
                   LOSS.trajectory_top_k)


# ------------------------------------------------------------------ the attempt
def _context(ev: Evaluator, enc: list, perf: PerformanceConfig, reuse: bool) -> StepContext:
    """The labeling call's context; without `reuse` as before the fixed costs were cut: the
    prefix pass through TransformerLens's modules (the steps stay lean), every hard-label
    rating run afresh."""
    cache = PrefixCache(ev, enc, perf.eval_batch_size, max_resident=perf.max_resident_examples,
                        lean_prefix=reuse)
    ctx = StepContext(ev, enc, cache, None, perf)
    ctx.ratings.enabled = reuse
    return ctx


def _split(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training, validation and held-out examples: 60/20/20, seeded."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    a, b = int(0.6 * n), int(0.8 * n)
    return perm[:a], perm[a:b], perm[b:]


def attempt(s: Setup, steps: int, n_examples: int, reuse: bool) -> dict[str, float]:
    """One whole attempt of `steps` steps on one feature of `n_examples` examples, fixed
    costs included: the prefix pass over its examples, the steps, scoring the hard label on
    its training, validation and held-out examples (`finish`). Encoding (the evaluator's
    first sight of the examples) is timed apart: the plain method pays it too."""
    cfg = LabelConfig(steps=steps, stop_early=False, batch_size=s.batch, restarts=())
    items = s.items[:n_examples]
    s.ev._encoded.clear()  # the evaluator's memory of encoded examples: a first sight
    t0 = time.perf_counter()
    enc = [s.ev.encode(e.sentence, e.word) for e in items]
    t1 = time.perf_counter()
    ctx = _context(s.ev, enc, cfg.performance, reuse)
    sync(s.device)
    t2 = time.perf_counter()
    train, val, held = _split(len(enc))
    t = s.targets[:n_examples]
    job = FeatureJob("bench", train, t[train], held, t[held], val, t[val])
    (state,) = run_attempt(ctx, [job], cfg)
    sync(s.device)
    t3 = time.perf_counter()
    finish(state, ctx, cfg)
    sync(s.device)
    t4 = time.perf_counter()
    return {"encode_s": t1 - t0, "prefix_s": t2 - t1, "steps_s": t3 - t2, "score_s": t4 - t3,
            "total_s": t4 - t1, "ratings_run": ctx.ratings.computed}


def labeling_call(s: Setup, steps: int, n_examples: int, reuse: bool
                  ) -> tuple[dict[str, float], LabelResult]:
    """One feature's whole labeling call with the default search (attempt 0 and its
    restarts, each converged label's error check, the refinements, the polysemantic check)
    at `steps` steps an attempt: its time, its prefix pass, and the hard-label ratings it
    ran and looked up."""
    cfg = LabelConfig(steps=steps, batch_size=s.batch)
    data = FeatureData.from_examples([(e.sentence, e.word, float(e.active))
                                      for e in s.items[:n_examples]], name="bench")
    t0 = time.perf_counter()
    enc, jobs = feature_jobs([data.prepare(cfg)], s.ev, cfg)
    ctx = _context(s.ev, enc, cfg.performance, reuse)
    t1 = time.perf_counter()
    (result,) = optimize_labels(ctx, jobs, cfg)
    sync(s.device)
    t2 = time.perf_counter()
    return ({"total_s": t2 - t0, "prefix_s": t1 - t0, "ratings_run": ctx.ratings.computed,
             "ratings_reused": ctx.ratings.reused, "attempts": len(result.attempts),
             "steps_total": result.metrics["steps_total"]}, result)


def compare_results(a: LabelResult, b: LabelResult) -> dict:
    """Whether two calls' results have the same labels in every attempt, and the largest
    relative difference of their metrics (float32: the lean prefix pass rounds otherwise than
    TransformerLens's, and a descent carries that along)."""
    pairs = list(zip([a, *a.attempts], [b, *b.attempts], strict=False))
    same = len(a.attempts) == len(b.attempts) and all(
        x.label_token_ids == y.label_token_ids and set(x.metrics) == set(y.metrics)
        for x, y in pairs)
    diff = max((abs(x.metrics[k] - y.metrics[k]) / max(abs(y.metrics[k]), 1e-6)
                for x, y in pairs for k in x.metrics if k in y.metrics
                and math.isfinite(x.metrics[k]) and math.isfinite(y.metrics[k])), default=0.0)
    return {"same_labels": same, "max_metric_rel_diff": diff}


def fixed_costs(args: argparse.Namespace, s: Setup) -> dict:
    """The attempt and the labeling call before and after the fixed costs were cut, in
    interleaved rounds (the attempt's figures are those of its fastest round)."""
    runs: dict[bool, list[dict]] = {True: [], False: []}
    calls: dict[bool, list[tuple[dict, LabelResult]]] = {True: [], False: []}
    for _ in range(args.attempt_rounds):
        for reuse in ((True, False) if args.before else (True,)):
            runs[reuse].append(attempt(s, args.attempt_steps, args.examples, reuse))
    if args.call_steps:
        for reuse in ((True, False) if args.before else (True,)):
            calls[reuse].append(labeling_call(s, args.call_steps, args.examples, reuse))
    out: dict = {}
    for reuse, name in ((True, "after"), (False, "before")):
        if runs[reuse]:
            out[name] = min(runs[reuse], key=lambda r: r["total_s"])
        if calls[reuse]:
            out[f"call_{name}"] = calls[reuse][0][0]
    if calls[True] and calls[False]:
        out["call_same"] = compare_results(calls[True][0][1], calls[False][0][1])
    return out


# ------------------------------------------------------------------ feature batching
def batching_row(s: Setup, n_feat: int, repeats: int, steps_per_feature: int) -> dict:
    v, batch = s.make(n_feat)
    if s.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = rounds({"step": step_fn(s.ctx, v, batch), "vocab": vocab_fn(s.ctx, v, batch)},
                   s.device, repeats)
    t = times["step"]
    row = {"features": n_feat, "rows_per_step": len(batch.rows), "step_s": t,
           "vocab_share": times["vocab"] / t,
           "features_per_hour": n_feat * 3600 / (t * steps_per_feature),
           "peak_memory_mb": peak_memory_mb(s.device)}
    if s.device.startswith("cuda"):
        # forward + backward to the inputs: ~4 FLOPs per parameter per suffix token, plus
        # attention over the cached prefix (4 * 2 * layers * d_model * prefix per token).
        cfg = s.ev.model.cfg
        n_params = sum(p.numel() for p in s.ev.model.parameters())
        prefix = sum(len(e.prefix_ids) for e in s.enc) / len(s.enc)
        tokens = len(batch.rows) * len(s.ev.suffix_ids(1))
        flops = 4 * n_params * tokens + 8 * cfg.n_layers * cfg.d_model * prefix * tokens
        peak = next((x for k, x in BF16_PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()),
                    None)
        row["tflops"] = flops / t / 1e12
        row["mfu"] = row["tflops"] / peak if peak else None
        row["s_per_feature"] = t * steps_per_feature / n_feat
    return row


# ------------------------------------------------------------------ main
def dtype_of(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def measure(args: argparse.Namespace, ev: Evaluator, shape: str) -> dict:
    device, dtype = args.device, dtype_of(args.device)
    n = max(max(args.features, default=1) * args.batch_size, args.examples)
    s = Setup(ev, n, args.batch_size, device)
    v, batch = s.make(1)
    tl = dataclasses.replace(s.ctx, cache=PrefixCache(ev, s.enc, 32, fast=False))
    fns = {"full_prompt": step_fn(s.full, v, batch), "cached_tl": step_fn(tl, v, batch),
           "cached": step_fn(s.ctx, v, batch), "vocab": vocab_fn(s.ctx, v, batch)}
    floor = floor_fn(s.ctx, batch)
    if floor is not None:
        fns["floor"] = floor
    t = rounds(fns, device, args.repeats)
    fixed = fixed_costs(args, s)
    return {
        "shape": shape, "vocab": args.vocab, "d_vocab": ev.d_vocab,
        "lean": s.ctx.cache.runner is not None,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "dtype": str(dtype), "params": sum(p.numel() for p in ev.model.parameters()),
        "prefix_tokens_mean": sum(len(e.prefix_ids) for e in s.enc) / len(s.enc),
        "shared_prefix_tokens": s.ctx.cache.shared_len,
        "suffix_tokens": len(ev.suffix_ids(1)), "examples": len(s.enc),
        "rows_per_step": args.batch_size, "step_s": t,
        "attempt": {**fixed["after"], "steps": args.attempt_steps, "examples": args.examples,
                    "full_prompt_steps_s": args.attempt_steps * t["full_prompt"],
                    "before": fixed.get("before")},
        "call": {k: v for k, v in fixed.items() if k.startswith("call")},
        "feature_batching": [batching_row(s, n, args.repeats, args.steps_per_feature)
                             for n in args.features],
    }


def report(out: dict) -> None:
    t = out["step_s"]
    print(f"{out['shape']} evaluator ({out['vocab']} vocabulary, {out['d_vocab']} tokens), "
          f"{out['params'] / 1e6:.2f}M params, {out['device']}, {out['dtype']}")
    print(f"prompt: {out['prefix_tokens_mean']:.0f} prefix tokens "
          f"({out['shared_prefix_tokens']} shared), {out['suffix_tokens']} suffix tokens; "
          f"{out['rows_per_step']} rows per step; {out['examples']} examples")
    print("| step | ms | vs full prompt | vs floor |\n|---|---|---|---|")
    floor = t.get("floor")
    for name, label in (("full_prompt", "full prompt (TransformerLens)"),
                        ("cached_tl", "cached, TransformerLens modules"),
                        ("cached", "cached, lean suffix (default)"),
                        ("floor", "floor: suffix forward + backward alone")):
        if name in t:
            print(f"| {label} | {1e3 * t[name]:.2f} | {t['full_prompt'] / t[name]:.1f}x | "
                  + (f"{t[name] / floor:.2f}x |" if floor else "- |"))
    report_attempt(out["attempt"])
    report_call(out.get("call") or {})
    print(f"vocabulary work: {1e3 * t['vocab']:.2f} ms a step, "
          f"{t['vocab'] / t['cached']:.0%} of the cached step")
    if not out["feature_batching"]:
        return
    mem = "peak GPU mem (MB)" if "cuda" in out["device"].lower() else "process peak RSS (MB)"
    print(f"| features per step | step (ms) | vocabulary work | features/hour (500 steps "
          f"each) | {mem} | MFU |\n|---|---|---|---|---|---|")
    for r in out["feature_batching"]:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
        print(f"| {r['features']} | {1e3 * r['step_s']:.1f} | {r['vocab_share']:.0%} | "
              f"{r['features_per_hour']:.0f} | {r['peak_memory_mb']:.0f} | {mfu} |")


STAGES = (("prefix_s", "prefix pass"), ("steps_s", "steps"),
          ("score_s", "scoring: training, validation, held-out"))


def report_attempt(a: dict) -> None:
    """The attempt's stages, after (and before) the fixed costs were cut, each with its share
    of the attempt."""
    phases = [("after", a)] + ([("before", a["before"])] if a.get("before") else [])
    print(f"attempt of {a['steps']} steps on {a['examples']} examples (60% training, 20% "
          "validation, 20% held-out), fixed costs included:")
    print("| stage | " + " | ".join(f"{n} (s) | share" for n, _ in phases) + " |")
    print("|---" * (1 + 2 * len(phases)) + "|")
    for key, label in STAGES:
        print(f"| {label} | " + " | ".join(f"{r[key]:.3f} | {r[key] / r['total_s']:.0%}"
                                           for _, r in phases) + " |")
    print("| **attempt** | " + " | ".join(f"**{r['total_s']:.3f}** | "
                                         f"{a['full_prompt_steps_s'] / r['total_s']:.1f}x plain"
                                         for _, r in phases) + " |")
    print("| fixed (prefix + scoring) | " + " | ".join(
        f"{r['prefix_s'] + r['score_s']:.3f} | {(r['prefix_s'] + r['score_s']) / r['total_s']:.0%}"
        for _, r in phases) + " |")
    print(f"plain: {a['steps']} full-prompt steps, {a['full_prompt_steps_s']:.2f} s; encoding "
          f"the examples (both methods, once per example per evaluator): {a['encode_s']:.2f} s")


def report_call(c: dict) -> None:
    """A whole labeling call, after (and before)."""
    for name in ("after", "before"):
        r = c.get(f"call_{name}")
        if r:
            print(f"labeling call, {name}: {r['total_s']:.2f} s ({r['attempts']} attempts, "
                  f"{r['steps_total']:.0f} steps; prefix pass {r['prefix_s']:.2f} s); hard-label "
                  f"ratings run {r['ratings_run']}, remembered {r['ratings_reused']}")
    if "call_same" in c:
        same = c["call_same"]
        print(f"the same label in every attempt before and after: "
              f"{'yes' if same['same_labels'] else 'NO'}; metrics within "
              f"{same['max_metric_rel_diff']:.0e} (relative; float32 rounding)")


GOAL_ATTEMPT, GOAL_FLOOR = 6.0, 1.5
"""The issue's goals: a whole attempt at least 6x the plain method; the lean step within 1.5x
of the floor."""


def summary(outs: list[dict]) -> None:
    """One row per family: the steps, the attempt's stages (and the fixed costs' share before
    they were cut), and the goals met or missed."""
    print(f"\n| family | path | full prompt (ms) | cached TL (ms) | lean (ms) | floor (ms) "
          f"| lean vs TL | lean / floor | attempt (s): prefix + steps + scoring | fixed share "
          f"(before) | plain (s) | attempt vs plain (before) | goals (>= {GOAL_ATTEMPT:.0f}x, "
          f"<= {GOAL_FLOOR}x) |")
    print("|---" * 13 + "|")
    for out in outs:
        t, a = out["step_s"], out["attempt"]
        speed = a["full_prompt_steps_s"] / a["total_s"]
        floor = t.get("floor")
        ratio = t["cached"] / floor if floor else float("nan")
        goals = [f"attempt {speed / GOAL_ATTEMPT:.2f} of goal" if speed < GOAL_ATTEMPT else "",
                 f"floor {ratio / GOAL_FLOOR:.2f}x over" if not ratio <= GOAL_FLOOR else ""]
        floor_ms = f"{1e3 * floor:.2f}" if floor else "-"
        b = a.get("before")
        share = f"{(a['prefix_s'] + a['score_s']) / a['total_s']:.0%}" + (
            f" ({(b['prefix_s'] + b['score_s']) / b['total_s']:.0%})" if b else "")
        before = f" ({a['full_prompt_steps_s'] / b['total_s']:.1f}x)" if b else ""
        print(f"| {out['shape']} | {'lean' if out['lean'] else 'TransformerLens'} "
              f"| {1e3 * t['full_prompt']:.1f} | {1e3 * t['cached_tl']:.2f} "
              f"| {1e3 * t['cached']:.2f} | {floor_ms} "
              f"| {t['cached_tl'] / t['cached']:.2f}x | {ratio:.2f}x "
              f"| {a['total_s']:.2f}: {a['prefix_s']:.2f} + {a['steps_s']:.2f} + "
              f"{a['score_s']:.2f} | {share} | {a['full_prompt_steps_s']:.2f} "
              f"| {speed:.1f}x{before} | {'; '.join(g for g in goals if g) or 'met'} |")


def run_families(args: argparse.Namespace) -> list[dict]:
    names = list(FAMILIES) if "all" in args.family else args.family
    print(f"families on the tiny shape, random weights, toy vocabulary; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; attempts of "
          f"{args.attempt_steps} steps on {args.examples} examples, {args.batch_size} rows "
          "per step\n")
    outs = []
    for name in names:
        torch.manual_seed(0)
        out = measure(args, build_family(name, args.device, dtype_of(args.device)), name)
        report(out)
        print()
        outs.append(out)
    summary(outs)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=["toy", *SHAPES], default=None,
                    help="toy (CPU default), small (default with --vocab llama3), tiny, "
                         "llama3-8b")
    ap.add_argument("--vocab", choices=["own", "llama3"], default="own")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per feature per step")
    ap.add_argument("--features", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--examples", type=int, default=500, help="examples of the attempt")
    ap.add_argument("--attempt-steps", type=int, default=100)
    ap.add_argument("--attempt-rounds", type=int, default=2,
                    help="rounds of the attempt (after and before alternating); the fastest "
                         "is reported")
    ap.add_argument("--no-before", dest="before", action="store_false",
                    help="leave out the attempt and call as before the fixed costs were cut "
                         "(the prefix pass through TransformerLens, no remembered ratings)")
    ap.add_argument("--call-steps", type=int, default=0,
                    help="also time one feature's whole labeling call (the default search: "
                         "restarts, error checks, refinements, polysemantic check) at this "
                         "many steps an attempt, after and before; 0: not")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps-per-feature", type=int, default=500)
    ap.add_argument("--family", nargs="+", choices=["all", *FAMILIES], default=None,
                    help="measure these evaluator families (random weights, tiny shape) "
                         "instead of --shape; no feature batching")
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    args = ap.parse_args()
    if args.family:
        args.features = []
        out: dict | list[dict] = run_families(args)
    else:
        if args.shape is None:
            args.shape = ("small" if args.vocab == "llama3" else "toy") \
                if args.device == "cpu" else "llama3-8b"
        torch.manual_seed(0)
        ev = build_evaluator(args.shape, args.vocab, args.device, dtype_of(args.device))
        out = measure(args, ev, args.shape)
        report(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
