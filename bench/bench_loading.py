"""Loader and generation benchmark for the embedded model on this machine (not a test).

Records cold (GGUF conversion + load) and cached load time, the footprint per precision, memory
returned by unload, and streamed vs plain `generate` tokens/s, all in one run, into
bench/results/loading_<device>.json and .md.

    .venv/bin/python bench/bench_loading.py [--precisions nf4,bf16] [--new-tokens 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.model.generation import GenerateOptions, conversation, generate, stream_generate
from explorer.model.loading import LoadConfig, load_model, memory_snapshot, release_memory, unload

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def tokens_per_second(loaded, options: GenerateOptions, streamed: bool) -> float:
    messages = conversation(PROMPT)
    if streamed:
        stream = stream_generate(loaded, messages, options)
        start = time.perf_counter()
        for _ in stream:
            pass
        result = stream.result
        return result.new_tokens / (time.perf_counter() - start)
    result = generate(loaded, messages, options)
    return result.new_tokens / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--precisions", default="nf4,fp4,int8,bf16,fp16,fp32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-precisions", default="nf4,bf16")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "precisions": {}}

    baseline_rss = psutil.Process().memory_info().rss
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cold = load_model(LoadConfig(precision="nf4", cache_dir=cache))
        results["cold_load_seconds_nf4"] = time.perf_counter() - start
        unload(cold)
        del cold
        release_memory()
        start = time.perf_counter()
        warm = load_model(LoadConfig(precision="nf4", cache_dir=cache))
        results["cached_load_seconds_nf4"] = time.perf_counter() - start
        unload(warm)
        del warm
        release_memory()

    stream_set = set(args.stream_precisions.split(","))
    for precision in args.precisions.split(","):
        before = memory_snapshot()
        start = time.perf_counter()
        loaded = load_model(LoadConfig(precision=precision))
        row = {"load_seconds": time.perf_counter() - start, "footprint_bytes": loaded.footprint_bytes,
               "loaded_as": loaded.precision, "rss_growth_bytes": memory_snapshot().rss_bytes - before.rss_bytes}
        if precision in stream_set:
            options = GenerateOptions(max_new_tokens=args.new_tokens)
            tokens_per_second(loaded, options, streamed=False)  # warm-up
            plain, streamed = [], []
            for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
                plain.append(tokens_per_second(loaded, options, streamed=False))
                streamed.append(tokens_per_second(loaded, options, streamed=True))
            row.update(plain_tokens_per_second=statistics.median(plain),
                       streamed_tokens_per_second=statistics.median(streamed),
                       streamed_over_plain=statistics.median(streamed) / statistics.median(plain))
        unload(loaded)
        del loaded
        gc.collect()
        release_memory()
        row["rss_after_unload_minus_before_bytes"] = memory_snapshot().rss_bytes - before.rss_bytes
        results["precisions"][precision] = row
        print(precision, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    results["rss_baseline_bytes"] = baseline_rss
    results["rss_end_bytes"] = psutil.Process().memory_info().rss

    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"loading_{device}.json").write_text(json.dumps(results, indent=2))
    m = results["machine"]
    lines = [f"# Loading and generation: embedded SmolLM2-135M-Instruct on {device}", "",
             f"Machine: {m.get('gpu') or m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM; torch {m['torch']}; "
             f"{results['date']}. Command: `.venv/bin/python bench/bench_loading.py`", "",
             f"- cold load (GGUF → safetensors conversion + NF4 load): {results['cold_load_seconds_nf4']:.1f} s",
             f"- cached load (NF4): {results['cached_load_seconds_nf4']:.1f} s", "",
             "| precision | load s | footprint MB | RSS growth MB | RSS left after unload MB | plain tok/s | streamed tok/s | streamed/plain |",
             "|---|---|---|---|---|---|---|---|"]
    for p, r in results["precisions"].items():
        lines.append(f"| {p} | {r['load_seconds']:.1f} | {r['footprint_bytes'] / 1e6:.1f} | "
                     f"{r['rss_growth_bytes'] / 1e6:.0f} | {r['rss_after_unload_minus_before_bytes'] / 1e6:.0f} | "
                     f"{r.get('plain_tokens_per_second', float('nan')):.1f} | "
                     f"{r.get('streamed_tokens_per_second', float('nan')):.1f} | "
                     f"{r.get('streamed_over_plain', float('nan')):.3f} |")
    lines += ["", "Goal: streamed ≥ 0.95 × plain. RSS growth is measured around each load in one long-lived "
              "process, so allocator reuse makes later rows smaller."]
    (out / f"loading_{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
