"""Benchmark: information-flow routes and direct logit attribution after a capture, and what the
"components" capture part costs.

    python bench/bench_routes.py --device cpu                          # embedded SmolLM2, 512 tokens
    python bench/bench_routes.py --device cuda --checkpoint DIR        # Llama-3.1-8B arch NF4, 4096 tokens

CPU: the routes graph (default threshold, last position) and one attribution on a 512-token
prompt, timed after the capture (goal: graph ≤ 2 s). CUDA: a plain forward
(model(ids, use_cache=False, logits_to_keep=1), what capture() runs) against capture() with only
"components" and with the default parts plus "components", interleaved; peak GPU memory over the
resident model and the host bytes the components hold (goal: components ≤ 1.3× a plain forward).
Writes bench/results/routes_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_capture import machine_info  # noqa: E402
from explorer.analyse.attribution import direct_logit_attribution  # noqa: E402
from explorer.analyse.routes import DEFAULT_THRESHOLD, attention_rows_from_store, build_routes  # noqa: E402
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture  # noqa: E402

GIB = 2**30
TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. Ships "
        "passing the rocky coast relied on its beam, and the keeper knew each captain by the rhythm of "
        "their horn. One stormy night in November, the lamp flickered and went dark. ")


def _timed(fn, reps: int, device: str) -> tuple[float, object]:
    times, out = [], None
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def components_nbytes(comp) -> int:
    tensors = [comp.resid, comp.z, comp.w_o, comp.mlp, comp.values, comp.b_o, comp.unembed_rows]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def run_cpu(args) -> dict:
    from explorer.model.loading import LoadConfig, load_model
    loaded = load_model(LoadConfig(source="embedded", precision=args.precision))
    ids = loaded.tokenizer(TEXT * 40, add_special_tokens=False)["input_ids"][: args.tokens]
    ids = torch.tensor(ids)
    opts = CaptureOptions(parts=DEFAULT_PARTS | {"components"})
    capture(loaded.model, loaded.tokenizer, ids[:64], CaptureOptions())            # warm-up: first calls are slow
    plain_s, _ = _timed(lambda: capture(loaded.model, loaded.tokenizer, ids, CaptureOptions()), 1, "cpu")
    cap_s, cap = _timed(lambda: capture(loaded.model, loaded.tokenizer, ids, opts), 1, "cpu")
    rows = attention_rows_from_store(cap.attention)
    cpu0 = time.process_time()
    graph_s, graph = _timed(lambda: build_routes(cap.components, rows, -1, args.threshold, cap.token_texts),
                            args.reps, "cpu")
    graph_cpu_s = (time.process_time() - cpu0) / args.reps
    dla_s, _ = _timed(lambda: direct_logit_attribution(cap.components, -1), args.reps, "cpu")
    return {"model": f"embedded SmolLM2-135M-Instruct ({args.precision})", "tokens": int(ids.numel()),
            "threshold": args.threshold, "capture_with_components_s": round(cap_s, 3),
            "capture_default_parts_s": round(plain_s, 3), "routes_graph_s": round(graph_s, 3),
            "routes_graph_cpu_s": round(graph_cpu_s, 3), "torch_threads": torch.get_num_threads(),
            "graph_nodes": len(graph.nodes), "graph_edges": len(graph.edges),
            "attribution_s": round(dla_s, 4), "components_gib": round(components_nbytes(cap.components) / GIB, 3),
            "goal": "routes graph ≤ 2 s on CPU after the capture"}


def run_cuda(args) -> dict:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    if not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map={"": 0}, attn_implementation="sdpa").eval()
    resident = torch.cuda.memory_allocated()
    ids = torch.randint(1000, 100000, (args.tokens,), generator=torch.Generator().manual_seed(0))
    runs = {
        "plain": lambda: model(input_ids=ids[None].cuda(), use_cache=False, logits_to_keep=1),
        "components": lambda: capture(model, None, ids, CaptureOptions(parts={"components"})),
        "default": lambda: capture(model, None, ids, CaptureOptions()),
        "default+components": lambda: capture(model, None, ids, CaptureOptions(parts=DEFAULT_PARTS | {"components"})),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, float] = {}
    comp_bytes = 0
    with torch.inference_mode():
        runs["plain"]()                                                  # warm-up
        runs["components"]()
        for _ in range(args.reps):
            for name, fn in runs.items():
                gc.collect()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                s, out = _timed(fn, 1, "cuda")
                times[name].append(s)
                peaks[name] = max(peaks.get(name, 0.0), (torch.cuda.max_memory_allocated() - resident) / GIB)
                if name == "components" and getattr(out, "components", None) is not None:
                    comp_bytes = components_nbytes(out.components)
                del out
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": f"{args.checkpoint} (Llama-3.1-8B architecture, random weights, NF4, bf16 compute)",
            "tokens": args.tokens, "median_s": {k: round(v, 4) for k, v in med.items()},
            "components_over_plain": round(med["components"] / med["plain"], 3),
            "default_plus_components_over_default": round(med["default+components"] / med["default"], 3),
            "peak_gpu_over_resident_gib": {k: round(v, 3) for k, v in peaks.items()},
            "components_host_gib": round(comp_bytes / GIB, 3), "resident_gib": round(resident / GIB, 2),
            "goal": "components ≤ 1.3× a plain forward at 4096 tokens"}


def write(device: str, result: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(device), "result": result}
    (out / f"routes_{device}.json").write_text(json.dumps(payload, indent=1))
    command = " ".join(["python", "bench/bench_routes.py", *sys.argv[1:]])
    lines = [f"# Routes and components ({device})", "", f"command: `{command}`", ""]
    lines += [f"- **{k}**: {v}" for k, v in result.items()]
    m = payload["machine"]
    lines += ["", f"machine: {m.get('gpu') or m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}, "
              f"load average at start {m['load_average_at_start']}"]
    (out / f"routes_{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoint", help="cuda: folder written by bench/make_random_checkpoint.py")
    p.add_argument("--precision", default="nf4", help="cpu: precision of the embedded model")
    p.add_argument("--tokens", type=int, default=None, help="prompt length (cpu 512, cuda 4096)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a shared, overloaded machine 1 avoids spin-waiting threads)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.tokens = args.tokens or (512 if args.device == "cpu" else 4096)
    result = run_cpu(args) if args.device == "cpu" else run_cuda(args)
    write(args.device, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
