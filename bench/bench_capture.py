"""Benchmark: capture vs the plain forward (vs eager output_attentions where it fits), per length,
up to a model's whole context (128k on an H200), plus captures held as the page holds them.

Plain, capture and eager run interleaved on the same machine and prompt, so their ratios are
comparable even when the machine is shared. "Plain" is model(ids, use_cache=False,
logits_to_keep=1), the same call capture() makes. Per length it records: capture/plain, which
layers' Q/K were kept and where (GPU / host / dropped), GPU peak, GPU and host store, head
summaries/plain and their FLOP/s against the bf16 peak, and map times (pooled 256², a 512×512
full-resolution window, one full head map where T² fits). Then ten captures at 4096 tokens, each
held while the next runs: p90 / plain (issue 17 item 4), in NF4 and bf16 on CUDA.
Every measurement is in its own try/except; results are rewritten after each step.

    python bench/bench_capture.py --device cpu --lengths 128,512 --reps 2          # embedded SmolLM2
    python bench/bench_capture.py --device cuda --checkpoint DIR \
        --lengths 4096,32768,65536,131072                                          # Llama-3.1-8B arch, NF4
    python bench/bench_capture.py --device cpu --check-8k                         # the 2-core 8k check

Writes bench/results/capture_<device>.json and .md (--check-8k: capture_cpu_8k.*).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analyse.attention import attention_map, attention_map_pooled, attention_window, capture_head_summaries
from explorer.analyse.head_stats import summaries, summary_flops
from explorer.model.loading import LoadConfig, load_model
from explorer.record.buffer_pool import shared_pool
from explorer.record.capture import Capture, CaptureOptions, capture

GIB = 2**30
BF16_PEAK = 989.4e12   # H100/H200 SXM dense bf16 tensor-core peak (FLOP/s), the yardstick for summaries


# ---------------------------------------------------------------------------------------------
# Machine and measurement
# ---------------------------------------------------------------------------------------------

def machine_info(device: str) -> dict:
    import transformers
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu": _cpu_name(), "cpu_count": __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in __import__("os").getloadavg()]}
    try:
        import bitsandbytes
        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception:   # noqa: BLE001
        info["bitsandbytes"] = None
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_seconds() -> float:
    """CPU time of this process (all threads). On a shared machine it moves far less than wall
    time, because time spent waiting for a core is not counted."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Measure:
    """Wall time, process CPU time and, on CUDA, peak allocated memory above what was allocated
    before the call."""

    def __init__(self, device: str):
        self.device = device
        self.last_cpu = 0.0

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float | None, object]:
        gc.collect()
        base = None
        if self.device == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        result = fn()
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self.last_cpu = _cpu_seconds() - c0
        peak = (torch.cuda.max_memory_allocated() - base) / GIB if base is not None else None
        return seconds, peak, result


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()



def store_bytes(cap: Capture) -> dict[str, float]:
    """GiB the capture holds on the GPU and on the host."""
    out = {"gpu": 0, "host": 0}
    tensors = [cap.embeddings, cap.residual, cap.attn_out_norm, cap.mlp_out_norm, cap.last_logits]
    if cap.attention is not None:
        for rec in cap.attention.layers.values():
            tensors += [rec.q, rec.k]
        tensors += list(cap.attention.masks)
    for t in tensors:
        if t is not None:
            out["gpu" if t.device.type == "cuda" else "host"] += t.numel() * t.element_size()
    return {k: v / GIB for k, v in out.items()}


def placement_counts(cap: Capture) -> dict:
    placement = cap.attention.placement if cap.attention is not None else {}
    counts = {w: [l for l, p in placement.items() if p.where == w] for w in ("gpu", "host", "dropped")}
    return {"layers_gpu": len(counts["gpu"]), "layers_host": len(counts["host"]),
            "layers_dropped": len(counts["dropped"]), "placement": cap.attention_placement()}


def _tried(errors: dict, name: str, fn: Callable[[], object]):
    """fn() or None, with the error kept under `name` (an OOM at 128k is a result, not a crash)."""
    try:
        return fn()
    except Exception as exc:   # noqa: BLE001 - every measurement stands alone
        errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        traceback.print_exc()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def time_forwards(model, ids: torch.Tensor, reps: int, device: str, eager: bool, errors: dict) -> tuple[dict, Capture | None]:
    """Interleaved rounds of plain / capture (/ eager); round 0 is warm-up. Returns per-mode
    lists of (seconds, cpu seconds, peak GiB) and the last capture."""
    measure = Measure(device)
    in_dev = model.get_input_embeddings().weight.device
    ids_dev = ids[None].to(in_dev)
    impl = model.config._attn_implementation

    def plain():
        with torch.inference_mode():
            return model(input_ids=ids_dev, use_cache=False, logits_to_keep=1).logits.shape

    def eager_forward():
        model.set_attn_implementation("eager")
        try:
            with torch.inference_mode():
                return len(model(input_ids=ids_dev, use_cache=False, logits_to_keep=1, output_attentions=True).attentions)
        finally:
            model.set_attn_implementation(impl)

    modes = {"plain": plain, "capture": lambda: capture(model, None, ids, CaptureOptions())}
    if eager:
        modes["eager"] = eager_forward
    runs: dict[str, list] = {m: [] for m in modes}
    cap = out = result = None
    for r in range(reps + 1):
        order = list(modes)[r % len(modes):] + list(modes)[:r % len(modes)]
        for mode in order:
            if mode == "capture":
                cap = out = result = None          # the previous capture goes back to the pool first
                gc.collect()
            out = _tried(errors, f"{mode} round {r}", lambda: measure(modes[mode]))
            if out is None:
                if mode == "eager":
                    del modes["eager"]
                continue
            seconds, peak, result = out
            if mode == "capture":
                cap = result
            if r > 0:
                runs[mode].append((seconds, measure.last_cpu, peak))
        print(f"  T={ids.numel()} round {r}: " + ", ".join(f"{m}={v[-1][0]:.3f}s" for m, v in runs.items() if v),
              flush=True)
    return runs, cap


def on_demand(cap: Capture, device: str, t: int, reps: int, errors: dict) -> dict:
    """Summaries of every head, pooled 256² map, a 512×512 window near 70% of the prompt, and
    one full head map where T² fits."""
    measure = Measure(device)
    row: dict = {}
    store = cap.attention
    layer = cap.attention_layers[len(cap.attention_layers) // 2] if cap.attention_layers else 0
    n = 1 if t >= 65536 else 2
    summ = [x for x in (_tried(errors, "summaries", lambda: measure(lambda: summaries(store))) for _ in range(n)) if x]
    if summ:
        seconds = min(s for s, _, _ in summ)
        rec = store.layers[layer]
        flops = summary_flops(cap.num_heads, rec.q.shape[-1], t, t, len(store.layers))
        row.update(summaries_s=seconds, summaries_peak_gib=summ[-1][1], summaries_useful_tflops=flops / seconds / 1e12,
                   summaries_fraction_of_bf16_peak=flops / seconds / BF16_PEAK)
    pooled = [x[0] for x in (_tried(errors, "pooled", lambda: measure(lambda: attention_map_pooled(cap, layer, 0, 256)))
                             for _ in range(3)) if x]
    r0 = int(t * 0.7)
    rows, keys = (r0, min(t, r0 + 512)), (max(0, r0 - 256), min(t, r0 + 256))
    win = [x[0] for x in (_tried(errors, "window", lambda: measure(lambda: attention_window(cap, layer, 0, rows, keys)))
                          for _ in range(3)) if x]
    row.update(pooled_map_ms=1000 * _median(pooled) if pooled else None,
               window_ms=1000 * _median(win) if win else None, map_layer=layer)
    if t <= 4096:                         # the fast path against the exact tiled one, on this device
        def agreement():
            fast = summaries(store, [layer], fused=True)
            exact = summaries(store, [layer], fused=False)
            return {name: float((getattr(fast, name) - getattr(exact, name)).abs().max())
                    for name in ("entropy", "first_token", "lookback")}
        row["summaries_fused_vs_exact_max_abs"] = _tried(errors, "agreement", agreement)
    if t <= 16384:
        full = [x[0] for x in (_tried(errors, "head map", lambda: measure(lambda: attention_map(cap, layer, 0)))
                               for _ in range(3)) if x]
        row["head_map_ms"] = 1000 * _median(full) if full else None
    return row


def bench_length(model, label: str, t: int, reps: int, device: str, eager_max: int, seed: int = 0) -> dict:
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (t,), generator=torch.Generator().manual_seed(seed + t))
    errors: dict[str, str] = {}
    shared_pool().clear()                # idle buffers of the previous length would only hold host memory
    print(f"[{label}] T={t}", flush=True)
    runs, cap = time_forwards(model, ids, reps, device, t <= eager_max, errors)
    med = {m: _median([s for s, _, _ in v]) for m, v in runs.items()}
    row: dict = {"model": label, "tokens": t, "reps": reps, "errors": errors,
                 "times": {m: [s for s, _, _ in v] for m, v in runs.items()},
                 "plain_s": med.get("plain"), "capture_s": med.get("capture"), "eager_s": med.get("eager")}
    if med.get("plain") and med.get("capture"):
        row["capture_ratio"] = med["capture"] / med["plain"]
        row["capture_ratio_min"] = min(row["times"]["capture"]) / min(row["times"]["plain"])
        row["cpu_capture_ratio"] = (statistics.median(c for _, c, _ in runs["capture"])
                                    / max(1e-9, statistics.median(c for _, c, _ in runs["plain"])))
    if med.get("eager") and med.get("plain"):
        row["eager_ratio"] = med["eager"] / med["plain"]
    if device == "cuda":
        for m, v in runs.items():
            row[f"{m}_peak_gib"] = max((p for _, _, p in v if p is not None), default=None)
    if cap is not None:
        row.update(placement_counts(cap), notes=cap.notes)
        sizes = store_bytes(cap)
        row.update(gpu_store_gib=sizes["gpu"], host_store_gib=sizes["host"])
        if cap.attention_layers:
            row.update(on_demand(cap, device, t, reps, errors))
            if row.get("summaries_s") and med.get("plain"):
                row["summaries_over_plain"] = row["summaries_s"] / med["plain"]
    del cap
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    print(json.dumps({k: v for k, v in row.items() if k != "times"}), flush=True)
    return row


def held_captures(model, label: str, t: int, n: int, device: str) -> dict:
    """n captures of t tokens, each held while the next runs (as the page holds the last one):
    their times, p90 / the plain forward's median, and new pinned allocations after warm-up."""
    errors: dict[str, str] = {}
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (t,), generator=torch.Generator().manual_seed(t + 1))
    measure = Measure(device)
    in_dev = model.get_input_embeddings().weight.device

    def plain():
        with torch.inference_mode():
            return model(input_ids=ids[None].to(in_dev), use_cache=False, logits_to_keep=1).logits.shape

    plains = [x[0] for x in (_tried(errors, "plain", lambda: measure(plain)) for _ in range(4)) if x][1:]
    pool = shared_pool()
    before = pool.stats.allocations
    held, times, alloc_after, warmup = None, [], [], []
    for i in range(n + 2):                       # the first two fill the pool (two captures alive at once)
        out = _tried(errors, f"capture {i}", lambda: measure(lambda: capture(model, None, ids, CaptureOptions())))
        if out is None:
            continue
        (warmup if i < 2 else times).append(out[0])
        alloc_after.append(pool.stats.allocations - before)
        held = out[2]                 # the new one replaces the held one, as the page does
    held = out = None  # noqa: F841 - drops the last held capture before the pool is read
    gc.collect()
    p90 = sorted(times)[max(0, math.ceil(0.9 * len(times)) - 1)] if times else None
    plain_s = _median(plains)
    row = {"model": label, "tokens": t, "captures": n, "times": times, "warmup_times": warmup,
           "plain_s": plain_s, "p90_s": p90,
           "p90_over_plain": p90 / plain_s if p90 and plain_s else None,
           "pinned_allocations_after_each": alloc_after, "errors": errors}
    print(json.dumps(row), flush=True)
    return row


# ---------------------------------------------------------------------------------------------
# Reports (rewritten after every step, so a run cut short still leaves its results)
# ---------------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".3f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def write_report(name: str, device: str, info: dict, rows: list[dict], held: list[dict], goals: dict,
                 extra: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    info = {**info, "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()]}
    payload = {"device": device, "machine": info, "runs": rows, "held_captures": held, "goals": goals, **extra,
               "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    lines = [f"# Capture benchmark ({device})", "",
             f"Machine: {info.get('gpu', info['cpu'])}" + (f" ×{info['gpu_count']}" if device == "cuda" else "")
             + f"; CPU {info['cpu']} ({info['cpu_count']} cores, torch threads {info['torch_threads']}); "
             f"{info['platform']}; torch {info['torch']}, transformers {info['transformers']}, "
             f"bitsandbytes {info['bitsandbytes']}. Load average (1/5/15 min) at start "
             f"{info['load_average_at_start']}, at end {info['load_average_at_end']}"
             + (" — the machine was shared; read ratios, not absolute times." if device == "cpu" else "."), "",
             f"Run {payload['when']}. Median of the timed rounds (plain, capture, eager interleaved after one "
             "warm-up round). Summaries: the fastest run; FLOP/s count the useful QKᵀ work of every allowed "
             f"(query, key) pair, 2·D each, against a bf16 dense peak of {BF16_PEAK / 1e12:.0f} TFLOP/s "
             "(H100/H200 SXM). Window: 512 query rows × 512 keys near 70% of the prompt.", ""]
    lines += [f"- {k}: {v}" for k, v in extra.items()] + [""]
    header = ["model", "T", "plain s", "capture s", "capture/plain (min)", "layers GPU/host/dropped",
              "GPU store GiB", "host store GiB", "summaries s", "summ./plain", "summ. TFLOP/s (of peak)",
              "pooled 256² ms", "window ms", "head map ms", "eager/plain"]
    if device == "cuda":
        header += ["plain peak GiB", "capture peak GiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["model"], str(r["tokens"]), _fmt(r.get("plain_s")), _fmt(r.get("capture_s")),
                 f"{_fmt(r.get('capture_ratio'), '.2f')}× ({_fmt(r.get('capture_ratio_min'), '.2f')}×)",
                 f"{r.get('layers_gpu', '–')}/{r.get('layers_host', '–')}/{r.get('layers_dropped', '–')}",
                 _fmt(r.get("gpu_store_gib"), ".2f"), _fmt(r.get("host_store_gib"), ".2f"),
                 _fmt(r.get("summaries_s")), _fmt(r.get("summaries_over_plain"), ".2f") + "×",
                 f"{_fmt(r.get('summaries_useful_tflops'), '.3g')} ({_fmt(r.get('summaries_fraction_of_bf16_peak'), '.2%')})",
                 _fmt(r.get("pooled_map_ms"), ".1f"), _fmt(r.get("window_ms"), ".1f"), _fmt(r.get("head_map_ms"), ".1f"),
                 _fmt(r.get("eager_ratio"), ".2f")]
        if device == "cuda":
            cells += [_fmt(r.get("plain_peak_gib"), ".2f"), _fmt(r.get("capture_peak_gib"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- T={r['tokens']} ({r['model']}): {r.get('placement', '')}" for r in rows]
    errors = [f"- T={r['tokens']} ({r['model']}): {k}: {v}" for r in rows + held for k, v in r.get("errors", {}).items()]
    if held:
        lines += ["", "Captures held as the page holds them (each kept while the next runs):", "",
                  "| model | T | captures | plain s | 2 warm-up captures s | capture times s | p90 s | p90/plain "
                  "| pinned buffers allocated, cumulative after each (warm-up included) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for h in held:
            lines.append(f"| {h['model']} | {h['tokens']} | {h['captures']} | {_fmt(h['plain_s'])} | "
                         f"{' '.join(f'{x:.3f}' for x in h['warmup_times'])} | "
                         f"{' '.join(f'{x:.3f}' for x in h['times'])} | {_fmt(h['p90_s'])} | "
                         f"{_fmt(h['p90_over_plain'], '.2f')}× | {h['pinned_allocations_after_each']} |")
    if errors:
        lines += ["", "Errors (each measurement stands alone):"] + errors
    lines += ["", "Goals: " + "; ".join(f"{k}: {v}" for k, v in goals.items())]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

def run_cpu(args) -> None:
    rows, held = [], []
    info = machine_info("cpu")
    goals = {"capture/plain at 512": "≤ 1.15×", "held captures p90/plain": "≤ 1.25×"}
    extra = {"model": "embedded SmolLM2-135M-Instruct (30 layers, 9 heads, 3 KV heads), random token ids"}
    for precision in args.precisions.split(","):
        loaded = load_model(LoadConfig(source="embedded", precision=precision))
        label = f"SmolLM2-135M {precision}"
        for t in args.sizes or [128, 512]:
            rows.append(bench_length(loaded.model, label, t, args.reps, "cpu", args.eager_max))
            write_report("capture_cpu", "cpu", info, rows, held, goals, extra)
        held.append(held_captures(loaded.model, label, args.held_tokens or 256, args.held, "cpu"))
        write_report("capture_cpu", "cpu", info, rows, held, goals, extra)
        if args.profile and precision == args.precisions.split(",")[0]:
            profile_capture(loaded.model, args.profile, "cpu")
        del loaded
        gc.collect()


def check_8k(args) -> None:
    """The embedded model on this machine's cores: an 8k-token prompt captures within the memory
    budget and says what it kept (issue 20 item 4)."""
    import psutil
    loaded = load_model(LoadConfig(source="embedded", precision="nf4"))
    ids = torch.randint(3, 40000, (8192,), generator=torch.Generator().manual_seed(8))
    budget = int(psutil.virtual_memory().available * 0.5)
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    errors: dict = {}
    cap = _tried(errors, "capture", lambda: capture(loaded.model, None, ids, CaptureOptions()))
    seconds = time.perf_counter() - t0
    row = {"model": "SmolLM2-135M nf4", "tokens": 8192, "capture_s": seconds, "budget_gib": budget / GIB,
           "rss_growth_gib": (psutil.Process().memory_info().rss - rss0) / GIB,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "errors": errors}
    if cap is not None:
        row.update(placement_counts(cap), notes=cap.notes, **{f"{k}_store_gib": v for k, v in store_bytes(cap).items()})
        pooled = _tried(errors, "pooled", lambda: Measure("cpu")(lambda: attention_map_pooled(cap, 15, 0, 256)))
        win = _tried(errors, "window", lambda: Measure("cpu")(lambda: attention_window(cap, 15, 0, (7000, 7512), (6800, 7312))))
        row.update(pooled_map_ms=pooled[0] * 1000 if pooled else None, window_ms=win[0] * 1000 if win else None)
    out = ROOT / "bench" / "results"
    (out / "capture_cpu_8k.json").write_text(json.dumps({"machine": machine_info("cpu"), "run": row}, indent=1, default=str))
    text = [f"# 8k-token capture on the embedded model (CPU, torch threads {torch.get_num_threads()})", "",
            f"Machine: {_cpu_name()}, {__import__('os').cpu_count()} cores; run {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.", ""]
    text += [f"- {k}: {v}" for k, v in row.items()]
    (out / "capture_cpu_8k.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def _load_cuda(checkpoint: str, precision: str):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    kwargs = {}
    if precision == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.bfloat16, device_map={"": 0},
                                                attn_implementation="sdpa", **kwargs).eval()


def run_cuda(args) -> None:
    if not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    info = machine_info("cuda")
    rows, held = [], []
    goals = {"capture/plain at 32k, 64k, 128k": "≤ 1.1×, all 32 layers kept at 128k",
             "summaries/plain at 32k, 64k, 128k": "≤ 1.5×", "pooled 256² at 128k": "≤ 200 ms",
             "window at 128k": "≤ 100 ms", "held captures at 4096, p90/plain": "≤ 1.25× (bf16 and NF4)"}
    t0 = time.perf_counter()
    model = _load_cuda(args.checkpoint, "nf4")
    extra = {"model": f"{args.checkpoint} (Llama-3.1-8B architecture, random weights, bf16 compute), random token ids",
             "load_s": round(time.perf_counter() - t0, 1), "resident_gib": round(torch.cuda.memory_allocated() / GIB, 2)}
    label = "Llama-3.1-8B arch NF4"
    held.append(held_captures(model, label, args.held_tokens or 4096, args.held, "cuda"))
    write_report("capture_cuda", "cuda", info, rows, held, goals, extra)
    for t in args.sizes or [4096, 32768, 65536, 131072]:
        reps = args.reps if t <= 16384 else max(1, args.reps // 3)
        rows.append(bench_length(model, label, t, reps, "cuda", args.eager_max))
        write_report("capture_cuda", "cuda", info, rows, held, goals, extra)
    if args.profile:
        _tried({}, "profile", lambda: profile_capture(model, args.profile, "cuda"))
    del model
    gc.collect()
    torch.cuda.empty_cache()
    if "bf16" in args.cuda_precisions.split(","):
        model = _tried({}, "bf16 load", lambda: _load_cuda(args.checkpoint, "bf16"))
        if model is not None:
            held.append(held_captures(model, "Llama-3.1-8B arch bf16", args.held_tokens or 4096, args.held, "cuda"))
            write_report("capture_cuda", "cuda", info, rows, held, goals, extra)


def profile_capture(model, t: int, device: str) -> None:
    """One capture under torch.profiler, as a table in bench/results/capture_profile_<device>.md:
    where the capture's own time goes, for whoever tunes it next."""
    from torch.profiler import ProfilerActivity, profile
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (t,), generator=torch.Generator().manual_seed(t))
    capture(model, None, ids)                                     # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        cap = capture(model, None, ids)
        _sync(device)
        capture_head_summaries(cap)
        attention_map(cap, cap.num_layers // 2, 0)
        _sync(device)
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    out = ROOT / "bench" / "results" / f"capture_profile_{device}.md"
    out.write_text(f"# Profile: capture + head summaries + one head map, T={t} ({device})\n\n"
                   f"Machine: {machine_info(device).get('gpu', _cpu_name())}\n\n```\n{table}\n```\n")
    print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoint", help="cuda: folder written by make_random_checkpoint.py")
    p.add_argument("--precisions", default="bf16,nf4", help="cpu: embedded model precisions to run")
    p.add_argument("--cuda-precisions", default="nf4,bf16",
                   help="cuda: nf4 runs every length; bf16 (loaded after) runs the held-captures test")
    p.add_argument("--lengths", "--sizes", dest="sizes", type=lambda s: [int(x) for x in s.split(",")],
                   help="prompt lengths (cuda default 4096,32768,65536,131072)")
    p.add_argument("--reps", type=int, default=3,
                   help="timed rounds per length after one warm-up (a third of it above 16k tokens)")
    p.add_argument("--eager-max", type=int, default=4096, help="run eager output_attentions up to this length")
    p.add_argument("--held", type=int, default=10, help="captures in the held-captures test")
    p.add_argument("--held-tokens", type=int, help="their length (default 4096 on cuda, 256 on cpu)")
    p.add_argument("--check-8k", action="store_true", help="cpu: only the 8k-token embedded capture check")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--profile", type=int, metavar="T",
                   help="also profile one capture of T tokens into bench/results/capture_profile_<device>.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.check_8k:
        check_8k(args)
    else:
        (run_cuda if args.device == "cuda" else run_cpu)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
