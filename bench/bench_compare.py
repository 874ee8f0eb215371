"""Precision comparison benchmark: memory, speed and drift per precision, next to the notebook's claims.

CPU (the embedded SmolLM2-135M, real weights, nf4/fp4/int8/bf16/fp32, a few prompts):
    .venv/bin/python bench/bench_compare.py --device cpu

GPU (a Llama-3.1-8B-architecture checkpoint with random bf16 weights and a tokenizer folder inside
it, see bench/make_random_checkpoint.py; NF4 with double quantization and bf16 compute, and bf16):
    python bench/bench_compare.py --device cuda --checkpoint DIR

Every run goes through explorer.compare.run.run_comparison, one model resident at a time: load,
warm-up, greedy generation of a fixed number of tokens (min_new_tokens, so EOS cannot end a
random-weight model early), peak memory, then drift against the highest precision. Writes
bench/results/compare_<device>.json (reopens in the Compare page) and .md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.compare.report import markdown_report, save_results
from explorer.compare.run import CompareConfig, ComparisonResult, RunRecord, run_comparison
from explorer.views.units import fmt_bytes

CPU_PROMPTS = ["What is the capital of France?",
               "Explain in two sentences why the sky is blue.",
               "Write a haiku about a lighthouse."]

# The reference notebook's claims, and the earlier H100 measurement the issue quotes.
NOTEBOOK_NF4_FOOTPRINT = "~5.6 GB (Llama-3.1-8B)"
NOTEBOOK_SPEED = "4-bit \"2× faster\""
EARLIER_H100 = {"nf4_footprint": "5.59 GB", "decode": "10.9 tok/s NF4 vs 37.1 tok/s bf16"}

FILLER = ("The lighthouse keeper wrote in the log every evening: the weather, the ships that passed, the "
          "colour of the sea at dusk, and the small repairs the lamp needed. ")


def long_prompt(tokenizer, n_tokens: int) -> str:
    """Plain text of about n_tokens tokens (the chat template adds a few more)."""
    text = FILLER * (n_tokens // 8 + 8)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return "Summarise this log: " + tokenizer.decode(ids)


def _run(records: list[RunRecord], precision: str) -> RunRecord | None:
    """The run that really ran in `precision` (a loader fallback to bf16 must not pose as NF4)."""
    return next((r for r in records if r.precision == precision and r.loaded_precision == precision), None)


def claims_table(result: ComparisonResult, where: str) -> str:
    """The notebook's claims next to what this run measured (and the earlier H100 measurement)."""
    nf4, bf16 = _run(result.runs, "nf4"), _run(result.runs, "bf16")
    footprint = "—"
    speed = "—"
    if nf4 is not None:
        footprint = fmt_bytes(nf4.footprint_bytes)
        if bf16 is not None:
            footprint += f" ({nf4.footprint_bytes / bf16.footprint_bytes:.2f}× bf16's {fmt_bytes(bf16.footprint_bytes)})"
    if nf4 is not None and bf16 is not None and nf4.tokens_per_second and bf16.tokens_per_second:
        speed = (f"decode {nf4.tokens_per_second:.1f} tok/s NF4 vs {bf16.tokens_per_second:.1f} tok/s bf16 "
                 f"(NF4 = {nf4.tokens_per_second / bf16.tokens_per_second:.2f}× bf16)")
    drift = "—"
    if nf4 is not None and nf4.drift is not None:
        d = nf4.drift
        drift = (f"KL {d.kl_mean:.3g} nats, top-1 {d.top1_agreement:.1%}, final-layer residual cosine "
                 f"{d.residual_cosine[-1]:.4f}" if d.residual_cosine else f"KL {d.kl_mean:.3g}")
    return "\n".join([
        "## The notebook's claims, measured\n",
        f"| | the notebook claims | measured here ({where}) | earlier H100 measurement |",
        "|---|---|---|---|",
        f"| NF4 footprint | {NOTEBOOK_NF4_FOOTPRINT} | {footprint} | {EARLIER_H100['nf4_footprint']} |",
        f"| speed | {NOTEBOOK_SPEED} | {speed} | decode {EARLIER_H100['decode']} |",
        f"| NF4 drift vs {nf4.drift.reference if nf4 and nf4.drift else 'reference'} | (not measured) | {drift} | — |",
        "",
        "4-bit weights make the model smaller, not faster at batch size 1: bitsandbytes dequantizes every "
        "weight on each decode step. Random weights (GPU run) say nothing about quality; the drift there "
        "only shows the arithmetic difference.",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoint", help="model folder (GPU: the random Llama-3.1-8B checkpoint); default: embedded")
    p.add_argument("--precisions", help="default: nf4,fp4,int8,bf16,fp32 on CPU; nf4,bf16 on GPU")
    p.add_argument("--new-tokens", type=int, help="default: 32 on CPU, 128 on GPU")
    p.add_argument("--prompt-tokens", type=int, default=256,
                   help="with --checkpoint: length of the one long prompt (speed and drift)")
    p.add_argument("--no-attention", action="store_true", help="skip the per-head attention difference")
    p.add_argument("--repeats", type=int, help="timed generations per prompt, median kept (default: 3 on GPU, 1 on CPU)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (CPU); on a shared machine 1 avoids "
                                                "OpenMP oversubscription, which slows decoding several-fold")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.device == "cpu" and torch.cuda.is_available():
        print("note: CUDA is visible; the loader will place models on it", file=sys.stderr)
    source = args.checkpoint or "embedded"
    gpu = args.device == "cuda"
    precisions = (args.precisions or ("nf4,bf16" if gpu else "nf4,fp4,int8,bf16,fp32")).split(",")
    new_tokens = args.new_tokens or (128 if gpu else 32)
    if args.checkpoint:      # one long prompt, as the GPU run measures it
        from transformers import AutoTokenizer

        prompts = [long_prompt(AutoTokenizer.from_pretrained(args.checkpoint), args.prompt_tokens)]
    else:
        prompts = CPU_PROMPTS
    config = CompareConfig(models=[source], precisions=precisions, prompts=prompts, max_new_tokens=new_tokens,
                           fixed_length=True, drift=True, attention_drift=not args.no_attention,
                           double_quant=True, compute_dtype="bf16", warmup=True,
                           warmup_tokens=16 if gpu else 2, repeats=args.repeats or (3 if gpu else 1))
    started = time.perf_counter()
    result = run_comparison(config, progress=lambda m: print(m, flush=True))
    try:
        import psutil

        result.machine["load_average_end"] = [round(x, 2) for x in psutil.getloadavg()]
    except (ImportError, OSError):
        pass
    result.machine["bench"] = {"script": "bench/bench_compare.py", "argv": sys.argv[1:],
                               "wall_seconds": round(time.perf_counter() - started, 1),
                               "torch_threads": torch.get_num_threads(),
                               "prompt_tokens": [o.prompt_tokens for o in result.runs[0].outputs]
                               if result.runs else []}
    model = "random Llama-3.1-8B architecture" if args.checkpoint else "embedded SmolLM2-135M"
    where = f"{result.machine.get('gpu')}, {model}" if gpu else f"CPU, {model}, {result.machine.get('cpu', '')}"
    if not gpu and "load_average" in result.machine:
        end = result.machine.get("load_average_end", ["?"])[0]
        where += (f", {torch.get_num_threads()} torch thread(s), load average {result.machine['load_average'][0]}→{end} "
                  f"on {result.machine.get('cores')} cores (shared machine)")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compare_{args.device}"
    save_results(result, stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(markdown_report(result, extra=claims_table(result, where)), encoding="utf-8")
    print(claims_table(result, where))
    for r in result.runs:
        print(f"{r.label}: footprint {fmt_bytes(r.footprint_bytes)}, peak {fmt_bytes(r.peak_bytes)} ({r.peak_method}), "
              f"load {r.load_seconds or 0:.1f} s, TTFT {r.time_to_first_token or 0:.3f} s, "
              f"{r.tokens_per_second or 0:.1f} tok/s" + (f", error: {r.error}" if r.error else "")
              + (f", drift error: {r.drift_error}" if r.drift_error else ""))
    print(f"wrote {stem}.json and {stem}.md in {time.perf_counter() - started:.0f} s")
    return 0 if any(r.loaded_precision for r in result.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
