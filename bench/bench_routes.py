"""Benchmark: information-flow routes and direct logit attribution after a capture, and what the
"components" capture part costs.

    python bench/bench_routes.py --device cpu                          # embedded SmolLM2, 512 tokens
    python bench/bench_routes.py --device cuda --checkpoint DIR        # Llama-3.1-8B arch NF4, 4096 tokens

CPU: the routes graph (default threshold, last position) and one attribution on a 512-token
prompt, timed after the capture (goal: graph ≤ 2 s).

CUDA, every call through the model worker from a fresh thread, as the app makes it: a plain
forward (model(ids, use_cache=False, logits_to_keep=1), what capture() runs) against capture()
with "components" (kept on the GPU, the default where they fit, or copied to the host as the
forward goes), with "attention" only (which components need), and with the default parts with
and without "components", interleaved; then six default+components captures in a row, each
held until the next has run, as the Internals page holds its capture. Also: the first
components capture (W_o dequantised), the time in each capture step, routes and attribution
on the GPU-kept components, moving them to the host (what saving a file does), peak GPU memory
during each call and held by its result, and the bytes a capture's components hold (goal: components ≤ 1.3× a
plain forward at 4096 tokens).
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

from bench.bench_capture import machine_info
from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.routes import DEFAULT_THRESHOLD, attention_rows_from_store, build_routes
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture

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
    """Bytes one capture adds (W_o is shared by every capture of a model: not counted)."""
    tensors = [comp.resid, comp.z, comp.mlp, comp.values, comp.unembed_rows]
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


def _stages(model, ids, options: CaptureOptions) -> dict[str, float]:
    """Seconds in each step of capture() (plan, the forward with hooks, assemble) and in the
    assemble helpers, main thread, each timed with the GPU synchronised."""
    import explorer.record.capture as cap_mod
    import explorer.record.components_recorder as rec_mod
    from explorer.record.capture import assemble, run_forward
    from explorer.record.capture_plan import plan_capture
    spent: dict[str, float] = {}

    def timing(owner, name: str):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                torch.cuda.synchronize()
                spent[name] = round(spent.get(name, 0.0) + time.perf_counter() - t0, 4)
        setattr(owner, name, wrapper)
        return owner, name, original
    patched = [timing(rec_mod.ComponentsRecorder, "_unembedding"), timing(rec_mod.ComponentsRecorder, "_norms_at"),
               timing(rec_mod, "output_slices"), timing(cap_mod, "_small_statistics"),
               timing(cap_mod, "store_from_output"), timing(cap_mod, "_last_logits")]
    try:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        plan = plan_capture(model, None, ids, options)
        t1 = time.perf_counter()
        recorded = run_forward(model, plan, options)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        assemble(model, None, plan, recorded, options)
        torch.cuda.synchronize()
        t3 = time.perf_counter()
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    return {"plan": round(t1 - t0, 4), "forward": round(t2 - t1, 4), "assemble": round(t3 - t2, 4), **spent}


def _profile(model, ids, options: CaptureOptions) -> None:
    """torch.profiler's table of one components capture -> bench/results/routes_cuda_profile.txt."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        capture(model, None, ids, options)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=40)
    table += "\n\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    (ROOT / "bench" / "results" / "routes_cuda_profile.txt").write_text(table)


def _held_in_turn(on_app, ids, n: int) -> dict:
    """n default+components captures in a row, each held until the next one has run, as the
    Internals page holds its current capture: pinned host memory (default parts) can only be
    reused from the capture before last."""
    opts = CaptureOptions(parts=DEFAULT_PARTS | {"components"})
    held, times = None, []
    for _ in range(n):
        s, out = _timed(lambda: on_app(lambda m: capture(m, None, ids, opts)), 1, "cuda")
        times.append(s)
        held = out                                                    # the previous one is freed only now
    del held
    return {"each": [round(t, 3) for t in times], "median of the last 4": round(statistics.median(times[-4:]), 4)}


def run_cuda(args) -> dict:
    """On the path the app takes: every call from a fresh thread through the one model worker."""
    from bench.bench_app_path import in_fresh_thread
    from explorer.model.loading import LoadConfig, load_model
    from explorer.model.worker import ModelWorker
    if not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    loaded = load_model(LoadConfig(source=args.checkpoint, precision="nf4"))
    model = loaded.model
    worker = ModelWorker()
    worker.adopt(loaded)
    resident = torch.cuda.memory_allocated()
    ids = torch.randint(10, min(100000, model.get_input_embeddings().weight.shape[0]), (args.tokens,), generator=torch.Generator().manual_seed(0))
    comp = CaptureOptions(parts={"components"})
    on_app = lambda fn: in_fresh_thread(lambda: worker.call(lambda m: fn(m.model), "s0"))  # noqa: E731
    runs = {
        "plain": lambda: on_app(lambda m: m(input_ids=ids[None].cuda(), use_cache=False, logits_to_keep=1)),
        "components": lambda: on_app(lambda m: capture(m, None, ids, comp)),
        "components to host": lambda: on_app(lambda m: capture(m, None, ids, CaptureOptions(
            parts={"components"}, components_on_device=False))),
        "attention only": lambda: on_app(lambda m: capture(m, None, ids, CaptureOptions(parts={"attention"}))),
        "default": lambda: on_app(lambda m: capture(m, None, ids, CaptureOptions())),
        "default+components": lambda: on_app(lambda m: capture(m, None, ids, CaptureOptions(
            parts=DEFAULT_PARTS | {"components"}))),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, float] = {}
    held_gpu: dict[str, float] = {}
    comp_bytes = w_o_bytes = 0
    w_o_on = ""
    on_gpu, analysis_s = False, {"routes graph": [], "attribution": [], "move to host (file save)": []}
    runs["plain"]()                                                  # warm-up (and cuDNN's set-up on the worker)
    first_s, first = _timed(runs["components"], 1, "cuda")          # dequantises W_o (once per model)
    del first
    for name, fn in runs.items():
        fn()
    stages = _stages(model, ids, comp)
    if args.profile:
        _profile(model, ids, comp)
    for _ in range(args.reps):
        for name, fn in runs.items():
            gc.collect()
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            s, out = _timed(fn, 1, "cuda")
            times[name].append(s)
            peaks[name] = max(peaks.get(name, 0.0), (torch.cuda.max_memory_allocated() - before) / GIB)
            held_gpu[name] = max(held_gpu.get(name, 0.0), (torch.cuda.memory_allocated() - before) / GIB)
            if name == "components" and getattr(out, "components", None) is not None:
                comp_bytes = components_nbytes(out.components)
                w_o_bytes = out.components.w_o.numel() * out.components.w_o.element_size()
                w_o_on = str(out.components.w_o.device)
                on_gpu = out.components.on_device
                rows = attention_rows_from_store(out.attention)
                analysis_s["routes graph"].append(_timed(lambda out=out, rows=rows: build_routes(out.components, rows, -1), 1, "cuda")[0])
                analysis_s["attribution"].append(_timed(lambda out=out: direct_logit_attribution(out.components, -1), 1,
                                                        "cuda")[0])
                analysis_s["move to host (file save)"].append(_timed(out.components.on_host, 1, "cuda")[0])
            del out
    held = _held_in_turn(on_app, ids, 6)
    worker.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": f"{args.checkpoint} (Llama-3.1-8B architecture, random weights, NF4, bf16 compute)",
            "path": "each call from a fresh thread through the one model worker, as the app runs it",
            "tokens": args.tokens, "median_s": {k: round(v, 4) for k, v in med.items()},
            "components_over_plain": round(med["components"] / med["plain"], 3),
            "as_the_page_holds_them_s": held,
            "as_the_page_holds_them_over_plain": round(held["median of the last 4"] / med["plain"], 3),
            "components_to_host_over_plain": round(med["components to host"] / med["plain"], 3),
            "components_kept_on_gpu": on_gpu,
            "components_over_attention_only": round(med["components"] / med["attention only"], 3),
            "after_the_capture_s": {k: round(statistics.median(v), 3) for k, v in analysis_s.items() if v},
            "default_plus_components_over_default": round(med["default+components"] / med["default"], 3),
            "first_components_capture_s": round(first_s, 3),
            "components_stages_main_thread_s": stages,
            "peak_gpu_during_the_call_gib": {k: round(v, 3) for k, v in peaks.items()},
            "gpu_held_by_the_result_gib": {k: round(v, 3) for k, v in held_gpu.items()},
            "components_gib_per_capture": round(comp_bytes / GIB, 3),
            "w_o_once_per_model_gib": round(w_o_bytes / GIB, 3), "w_o_on": w_o_on, "resident_gib": round(resident / GIB, 2),
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
    p.add_argument("--profile", action="store_true", help="cuda: also write torch.profiler's table of one capture")
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
