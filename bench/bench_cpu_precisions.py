"""CPU first impression: streamed chat on the embedded model in four precisions, in one run (not a test).

Why: bitsandbytes' 4-bit layers compute in bf16 unless told otherwise, and a CPU without native
bf16 (no AVX-512 BF16 / AMX) emulates it, so a new user waits seconds for the first token. This
script measures what the chat page does (a fresh script thread submitting a WorkerStream to the one
long-lived model worker, which also does the loads) for NF4 with bf16 compute, NF4 with fp32 compute, bf16 and
fp32, and records first-token latency and decode tokens/s into bench/results/cpu_precisions.{json,md}.

    .venv/bin/python bench/bench_cpu_precisions.py [--new-tokens 48] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_loading import machine
from explorer.model.generation import GenerateOptions, conversation
from explorer.model.loading import LoadConfig, plan_precision
from explorer.model.worker import ModelWorker
from explorer.model.worker_stream import WorkerStream

PROMPT = "Tell me about lighthouses."
GOAL_FIRST_TOKEN_S = 1.5
GOAL_TOKENS_PER_S = 10.0

RUNS = (  # label, precision, compute dtype
    ("nf4 · bf16 compute", "nf4", "bf16"),
    ("nf4 · fp32 compute", "nf4", "fp32"),
    ("bf16", "bf16", "bf16"),
    ("fp32", "fp32", "fp32"),
)


def streamed_turn(worker: ModelWorker, options: GenerateOptions) -> tuple[float, float, int]:
    """One chat turn as the page runs it: a fresh thread (Streamlit's script runner makes one per
    rerun) submits a WorkerStream to the one long-lived model worker and iterates it."""
    out: dict = {}

    def script_thread() -> None:
        start = time.perf_counter()
        stream = WorkerStream(worker, conversation(PROMPT), options, session="bench")
        first = None
        for chunk in stream:
            if chunk and first is None:
                first = time.perf_counter() - start  # includes queueing, templating and tokenizing
        out["first"], out["result"] = first, stream.result

    t = threading.Thread(target=script_thread)
    t.start()
    t.join()
    r = out["result"]
    return out["first"] or r.seconds, r.tokens_per_second, r.new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    default_cfg = LoadConfig()
    _, default_compute, _ = plan_precision(default_cfg)
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                     "torch_threads": torch.get_num_threads(), "prompt": PROMPT, "new_tokens": args.new_tokens,
                     "default": {"precision": default_cfg.precision, "compute_dtype": default_compute},
                     "load_average_start": os.getloadavg()[0], "runs": {}}
    options = GenerateOptions(max_new_tokens=args.new_tokens)
    worker = ModelWorker()
    for label, precision, compute in RUNS:
        start = time.perf_counter()
        worker.load(LoadConfig(precision=precision, compute_dtype=compute))   # loads go through the worker too
        load_s = time.perf_counter() - start
        streamed_turn(worker, GenerateOptions(max_new_tokens=4))  # warm-up
        firsts, rates, news = [], [], []
        for _ in range(args.repeats):
            f, r, n = streamed_turn(worker, options)
            firsts.append(f)
            rates.append(r)
            news.append(n)
        row = {"precision": precision, "compute_dtype": compute, "load_seconds": load_s,
               "first_token_s": statistics.median(firsts), "tokens_per_second": statistics.median(rates),
               "first_token_all": firsts, "tokens_per_second_all": rates, "new_tokens": news,
               "is_default": precision == default_cfg.precision and compute == default_compute}
        row["meets_goals"] = row["first_token_s"] <= GOAL_FIRST_TOKEN_S and row["tokens_per_second"] >= GOAL_TOKENS_PER_S
        results["runs"][label] = row
        print(label, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        worker.unload()
    results["load_average_end"] = os.getloadavg()[0]
    write(results)


def write(results: dict) -> None:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "cpu_precisions.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    d = results["default"]
    lines = ["# CPU first impression: streamed chat on the embedded SmolLM2-135M-Instruct", "",
             f"Machine: {m['cpu']}, {m['cores']} cores (torch threads {results['torch_threads']}), "
             f"{m['ram_gb']} GiB RAM; torch {m['torch']}; {results['date']}. "
             "Command: `.venv/bin/python bench/bench_cpu_precisions.py`", "",
             f"Prompt {results['prompt']!r} through the chat template, {results['new_tokens']} new tokens, greedy; "
             "each turn is run as the chat page runs it (a fresh thread submitting a WorkerStream to the one model worker). "
             "Median of the repeats. First token counts templating and tokenizing.", "",
             f"Default on this machine: {d['precision']} with {d['compute_dtype']} compute "
             "(`compute_dtype=\"auto\"`: fp32 on a CPU without native bf16, bf16 on a GPU).", "",
             f"Goals: first token ≤ {GOAL_FIRST_TOKEN_S} s and ≥ {GOAL_TOKENS_PER_S:.0f} tok/s on the default.", "",
             "| run | load s | first token s | tok/s | goals met | default |", "|---|---|---|---|---|---|"]
    for label, r in results["runs"].items():
        lines.append(f"| {label} | {r['load_seconds']:.1f} | {r['first_token_s']:.2f} | {r['tokens_per_second']:.1f} | "
                     f"{'yes' if r['meets_goals'] else 'no'} | {'◀' if r['is_default'] else ''} |")
    lines += ["", f"Load average (1 min) at start {results.get('load_average_start', float('nan')):.1f}, at end "
              f"{results.get('load_average_end', float('nan')):.1f}, on {m['cores']} cores. On a busy machine the "
              "absolute figures are several times slower than on a quiet one; the rows of one run are comparable "
              "with each other."]
    (out / "cpu_precisions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
