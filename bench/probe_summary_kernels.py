"""Which attention kernel can carry the head summaries at the forward's pace (not a test; GPU only).

Why: the fused summaries (explorer/analyse/head_stats.fused_summaries) run one attention call per
layer with the keys as values plus a position column, so their head dim is D+8 = 136 for Llama's
128. Flash kernels are compiled for a few head dims; 136 may run as a larger one. This probe times,
for one 32-head layer at several lengths, causal attention at the forward's shape (D=128, fp16/bf16)
against the summaries' shapes, so the next change to the summaries picks the kernel by measurement.

    python bench/probe_summary_kernels.py --lengths 8192,32768
Writes bench/results/summary_kernels_cuda.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def _time(fn, reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def _cases(t: int, heads: int, dtype: torch.dtype) -> dict[str, object]:
    """Each case: a thunk running one layer's attention at length t."""
    dev = "cuda"
    q128 = torch.randn(1, heads, t, 128, device=dev, dtype=dtype)
    k128 = torch.randn_like(q128)
    q136 = torch.randn(1, heads, t, 136, device=dev, dtype=dtype)
    k136 = torch.randn_like(q136)
    v136 = torch.randn(1, heads, t, 136, device=dev, dtype=dtype)
    ops = torch.ops.aten
    scale = 128 ** -0.5
    cases: dict[str, object] = {
        "flash D=128 (the forward's shape)":
            lambda: ops._scaled_dot_product_flash_attention(q128, k128, k128, 0.0, True, False, scale=scale),
        "flash D=136 (today's summaries)":
            lambda: ops._scaled_dot_product_flash_attention(q136, k136, k136, 0.0, True, False, scale=scale),
        "efficient D=136":
            lambda: ops._scaled_dot_product_efficient_attention(q136, k136, k136, None, True, 0.0, True, scale=scale),
        "efficient Dqk=128 Dv=136":
            lambda: ops._scaled_dot_product_efficient_attention(q128, k128, v136, None, True, 0.0, True, scale=scale),
        "sdpa D=128 (default backend)":
            lambda: torch.nn.functional.scaled_dot_product_attention(q128, k128, k128, is_causal=True),
    }
    if hasattr(ops, "_scaled_dot_product_cudnn_attention"):
        cases["cudnn Dqk=128 Dv=136"] = lambda: ops._scaled_dot_product_cudnn_attention(
            q128, k128, v136, None, True, 0.0, True, False, scale=scale)
        cases["cudnn D=128"] = lambda: ops._scaled_dot_product_cudnn_attention(
            q128, k128, k128, None, True, 0.0, True, False, scale=scale)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="8192,32768")
    parser.add_argument("--heads", type=int, default=32)
    args = parser.parse_args()
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for t in (int(x) for x in args.lengths.split(",")):
            for name, fn in _cases(t, args.heads, dtype).items():
                try:
                    s = _time(fn)
                    flops = 4.0 * 128 * args.heads * t * t / 2          # QKᵀ and PV, causal half
                    rows.append({"dtype": str(dtype).split(".")[-1], "T": t, "kernel": name,
                                 "ms": round(s * 1e3, 2), "TFLOP/s": round(flops / s / 1e12, 1)})
                except (RuntimeError, NotImplementedError, TypeError) as exc:
                    rows.append({"dtype": str(dtype).split(".")[-1], "T": t, "kernel": name,
                                 "ms": None, "error": str(exc).splitlines()[0][:120]})
                print(rows[-1], flush=True)
            torch.cuda.empty_cache()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary_kernels_cuda.json").write_text(json.dumps(rows, indent=1))
    lines = ["# Attention kernels for the head summaries (cuda)", "",
             f"{torch.cuda.get_device_name()}; torch {torch.__version__}. One layer, {args.heads} heads, causal, "
             f"best of 3 after a warm-up. `python bench/probe_summary_kernels.py --lengths {args.lengths}`. "
             "TFLOP/s count QKᵀ and PV at D=128 over the causal half, for every row alike.", "",
             "| dtype | T | kernel | ms | TFLOP/s | error |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['T']} | {r['kernel']} | {r.get('ms')} | {r.get('TFLOP/s', '')} | "
              f"{r.get('error', '')} |" for r in rows]
    (RESULTS / "summary_kernels_cuda.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
