"""Benchmark and check: a class's captures in one batched forward (capture_batch) against the same
captures one after another, on the path the worker takes.

    python bench/bench_capture_batch.py --device cuda --checkpoint /tmp/llama31-8b-random
    python bench/bench_capture_batch.py --device cpu             # embedded SmolLM2 in NF4

For 16 prompts of chat-turn length (250-330 tokens on cuda, 40-80 on cpu), with the app's default
parts and with per-head components (the Internals page's default): the time of 16 captures one
after another and of one capture_batch, twice (the first round allocates the pooled host buffers,
the second reuses them); and how far each batched row is from its capture alone, as the largest
difference over the largest value of each kind of tensor (residual, Q/K, logits, components, ...),
plus whether the predicted next token agrees. Writes bench/results/capture_batch_<device>.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.compare.measure import machine_info
from explorer.record.buffer_pool import shared_pool
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
from explorer.record.capture_batch import capture_batch
from tests.capture_snapshot import tensors_of


def kind_of(path: str) -> str:
    """'.attention.layers[3].q' -> 'attention q'; '.norms[model.norm].input_rms' -> 'norms input_rms'."""
    parts = [p.split("[")[0] for p in path.strip(".").split(".")]
    return " ".join(p for p in (parts[0], parts[-1] if len(parts) > 1 else "") if p)


def relative_differences(alone, batched) -> dict[str, float]:
    a, b = tensors_of(alone), tensors_of(batched)
    worst: dict[str, float] = {}
    for path, x in a.items():
        y = b.get(path)
        if y is None or path.startswith(".attention.masks") or not x.is_floating_point() or not x.numel():
            continue
        kind = kind_of(path)
        if x.shape != y.shape:      # e.g. the unembedding rows kept: a different predicted token somewhere
            worst[kind] = float("inf")
            continue
        x, y = x.double(), y.double().to(x.device)
        scale = float(x.abs().max()) or 1.0
        worst[kind] = max(worst.get(kind, 0.0), float((x - y).abs().max()) / scale)
    return worst


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run(model, tokenizer, device: str, lengths: list[int], parts: frozenset[str], label: str) -> dict:
    vocab = model.get_input_embeddings().weight.shape[0]
    prompts = [torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    options = CaptureOptions(parts=parts)
    shared_pool().clear()
    capture(model, tokenizer, prompts[0], options)                      # warm-up
    rounds = []
    for r in range(2):
        _sync(device)
        t0 = time.perf_counter()
        alone = [capture(model, tokenizer, p, options) for p in prompts]
        _sync(device)
        serial = time.perf_counter() - t0
        del alone
        t0 = time.perf_counter()
        batched = capture_batch(model, tokenizer, prompts, options)
        _sync(device)
        shared = time.perf_counter() - t0
        rounds.append({"round": r, "one_after_another_s": round(serial, 3), "batched_s": round(shared, 3),
                       "speed-up": round(serial / shared, 2)})
        print(label, rounds[-1], flush=True)
    worst: dict[str, float] = {}
    same_top = 0
    for p, cap in zip(prompts, batched):
        if isinstance(cap, BaseException):
            raise cap
        alone = capture(model, tokenizer, p, options)
        for k, v in relative_differences(alone, cap).items():
            worst[k] = max(worst.get(k, 0.0), v)
        same_top += int(int(alone.last_logits.argmax()) == int(cap.last_logits.argmax()))
    return {"label": label, "prompts": len(prompts), "tokens": lengths, "rounds": rounds,
            "same_next_token": f"{same_top}/{len(prompts)}",
            "worst_relative_difference": {k: float(f"{v:.3g}") for k, v in sorted(worst.items())}}


def load(args):
    if args.device == "cpu":
        from explorer.model.loading import LoadConfig, load_model
        loaded = load_model(LoadConfig(precision="nf4"))
        return loaded.model, loaded.tokenizer, "embedded SmolLM2-135M-Instruct in NF4"
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.bfloat16, device_map={"": 0},
                                                 attn_implementation="sdpa", quantization_config=q).eval()
    return model, None, f"{args.checkpoint} (Llama-3.1-8B architecture, random weights) in NF4"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--checkpoint")
    ap.add_argument("--students", type=int, default=16)
    args = ap.parse_args(argv)
    model, tokenizer, name = load(args)
    lo, hi = (250, 330) if args.device == "cuda" else (40, 80)
    lengths = [lo + (hi - lo) * i // max(1, args.students - 1) for i in range(args.students)]
    runs = [run(model, tokenizer, args.device, lengths, DEFAULT_PARTS, "default parts"),
            run(model, tokenizer, args.device, lengths, DEFAULT_PARTS | {"components"}, "with components")]
    info = machine_info()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    out = ROOT / "bench" / "results"
    command = "python bench/bench_capture_batch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / f"capture_batch_{args.device}.json").write_text(json.dumps(
        {"run": stamp, "command": command, "machine": info, "model": name, "runs": runs}, indent=2) + "\n")
    lines = [f"# A class's captures: one batched forward against one after another ({args.device})", "",
             f"Machine: {info.get('gpu') or info.get('cpu', '')}; torch {info.get('torch')}, transformers "
             f"{info.get('transformers')}, bitsandbytes {info.get('bitsandbytes')}. Model: {name}.", "",
             f"Run {stamp}. `{command}`. {args.students} prompts of {lo}-{hi} tokens. Round 0 allocates the pooled "
             "host buffers, round 1 reuses them. Differences: each batched row against its capture alone, the "
             "largest absolute difference over the largest absolute value, worst over rows and tensors of a kind "
             "(inf: a row kept another shape, e.g. other unembedding rows because a position predicted another token).", "",
             "| parts | round | one after another s | batched s | speed-up |", "|---|---|---|---|---|"]
    for r in runs:
        for rd in r["rounds"]:
            lines.append(f"| {r['label']} | {rd['round']} | {rd['one_after_another_s']} | {rd['batched_s']} | "
                         f"{rd['speed-up']}× |")
    for r in runs:
        lines += ["", f"{r['label']}: the same next token in {r['same_next_token']} rows; worst relative difference "
                  "by kind: " + ", ".join(f"{k} {v:.2g}" for k, v in r["worst_relative_difference"].items())]
    (out / f"capture_batch_{args.device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
