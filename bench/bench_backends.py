"""The same evaluator as a HookedTransformer and as a TransformerLens 3 TransformerBridge.

The toy evaluator's weights, twice: loaded as a HookedTransformer (the default backend, with
the lean suffix forward) and written into a Hugging Face Llama booted as a `TransformerBridge`
(`loading.hooked_to_hf_llama`). For each it times, in one run, interleaved:

* a cached step: the label's suffix over the prefix cache, forward and backward to the label
  embeddings (what every optimisation step costs);
* a full-prompt step (``use_cache=False``);
* a whole label of the paper's ``animals`` feature (fixed steps).

It prints the median milliseconds of each and the ratio bridge / hooked.

    python bench/bench_backends.py              # about two minutes on 2 CPU cores
    python bench/bench_backends.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from saelens_tokenlabel import FeatureData, LabelConfig, label_feature
from saelens_tokenlabel.evaluator.forward import (
    PrefixCache,
    cached_logits,
    full_prompt_logits,
)
from saelens_tokenlabel.toy import load_toy_evaluator

SENTENCES = [("The cat sat on the mat near the old red door.", "cat"),
             ("I ate 3 apples and a pear.", "apples"), ("A dog barked.", "dog"),
             ("The blue car stopped by the house.", "blue")]


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _step_fns(ev, batch: int):
    exs = [ev.encode(s, w) for s, w in SENTENCES] * (batch // len(SENTENCES))
    cache = PrefixCache(ev, exs)
    rows = torch.arange(len(exs))
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(len(exs), 1, ev.d_vocab, generator=g), -1)
    e = (p.to(ev.model.W_E.device, ev.model.W_E.dtype) @ ev.model.W_E).requires_grad_(True)

    def cached() -> None:
        cached_logits(ev, cache, rows, e)[:, ev.yes_id].sum().backward()

    def full() -> None:
        full_prompt_logits(ev, exs, e)[:, ev.yes_id].sum().backward()

    return cached, full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300, help="steps of the whole label")
    ap.add_argument("--out", help="JSON file for the figures")
    args = ap.parse_args()
    evs = {b: load_toy_evaluator(device=args.device, backend=b) for b in ("hooked", "bridge")}
    data = FeatureData.synthetic("animals")
    fig: dict[str, dict[str, float]] = {b: {} for b in evs}
    fns = {b: _step_fns(ev, args.batch) for b, ev in evs.items()}
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        for b in evs:
            fig[b].setdefault("cached", []).append(_timed(fns[b][0], 1))
            fig[b].setdefault("full", []).append(_timed(fns[b][1], 1))
    for b, ev in evs.items():
        t = time.perf_counter()
        result = label_feature(data, ev, LabelConfig.preset("animals", steps=args.steps,
                                                            seed=0))
        fig[b]["label"] = [1000 * (time.perf_counter() - t)]
        fig[b]["label_text"] = result.label  # type: ignore[assignment]
    out = {b: {k: (statistics.median(v) if isinstance(v, list) else v) for k, v in f.items()}
           for b, f in fig.items()}
    print(f"toy evaluator, {args.device}, batch {args.batch}, median of {args.repeats}")
    print(f"{'':22}{'hooked ms':>12}{'bridge ms':>12}{'bridge/hooked':>15}")
    for k, what in (("cached", "cached step"), ("full", "full-prompt step"),
                    ("label", f"label ({args.steps} steps)")):
        h, br = out["hooked"][k], out["bridge"][k]
        print(f"{what:22}{h:12.1f}{br:12.1f}{br / h:15.2f}")
    print(f"labels: hooked {out['hooked']['label_text']!r}, bridge "
          f"{out['bridge']['label_text']!r}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
