"""Benchmark: full capture vs the plain forward vs eager output_attentions, in one run.

All three run interleaved on the same machine and prompt, so their ratios are comparable even
when the machine is shared. "Plain" is model(ids, use_cache=False, logits_to_keep=1), the same
call capture() makes; "eager" switches to eager attention and asks for output_attentions (what
other tools do). Also timed: the per-head summaries of every head, one head's full map and one
pooled 256×256 map. Peak GPU memory is measured over the model's resident memory.

    python bench/bench_capture.py --device cpu                          # embedded SmolLM2
    python bench/bench_capture.py --device cuda --checkpoint DIR        # Llama-3.1-8B arch, NF4

Writes bench/results/capture_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analyse.attention import attention_map, attention_map_pooled, capture_head_summaries  # noqa: E402
from explorer.model.loading import LoadConfig, load_model  # noqa: E402
from explorer.record.capture import Capture, CaptureOptions, capture  # noqa: E402

GIB = 2**30


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


def capture_bytes(cap: Capture) -> int:
    total = 0
    for t in (cap.embeddings, cap.residual, cap.attn_out_norm, cap.mlp_out_norm, cap.last_logits):
        if t is not None:
            total += t.numel() * t.element_size()
    if cap.attention is not None:
        for rec in cap.attention.layers.values():
            total += rec.q.numel() * rec.q.element_size() + rec.k.numel() * rec.k.element_size()
        total += sum(m.numel() for m in cap.attention.masks)
    return total


# ---------------------------------------------------------------------------------------------
# One model, several prompt lengths
# ---------------------------------------------------------------------------------------------

def bench_model(model, label: str, sizes: list[int], reps: int, device: str, seed: int = 0) -> list[dict]:
    measure = Measure(device)
    vocab = model.get_input_embeddings().weight.shape[0]
    in_dev = model.get_input_embeddings().weight.device
    impl = model.config._attn_implementation
    rows = []
    eager_dead = False
    for t in sizes:
        gen = torch.Generator().manual_seed(seed + t)
        ids = torch.randint(0, vocab, (t,), generator=gen)
        ids_dev = ids[None].to(in_dev)
        options = CaptureOptions()

        def plain():
            with torch.inference_mode():
                out = model(input_ids=ids_dev, use_cache=False, logits_to_keep=1)
            return out.logits.shape

        def do_capture():
            return capture(model, None, ids, options)

        def eager():
            model.set_attn_implementation("eager")
            try:
                with torch.inference_mode():
                    out = model(input_ids=ids_dev, use_cache=False, logits_to_keep=1, output_attentions=True)
                return len(out.attentions)
            finally:
                model.set_attn_implementation(impl)

        times: dict[str, list[float]] = {"plain": [], "capture": [], "eager": []}
        cpu: dict[str, list[float]] = {"plain": [], "capture": [], "eager": []}
        peaks: dict[str, list[float]] = {"plain": [], "capture": [], "eager": []}
        modes = {"plain": plain, "capture": do_capture, "eager": eager}
        eager_status = "ok" if not eager_dead else "skipped (OOM at a shorter prompt)"
        cap = None
        print(f"[{label}] T={t}: warm-up", flush=True)
        for r in range(reps + 1):                        # round 0 is warm-up
            order = list(modes)[r % 3:] + list(modes)[:r % 3]
            for mode in order:
                if mode == "eager" and (eager_dead or eager_status != "ok"):
                    continue
                if mode == "capture":
                    cap = None          # never hold two captures (host memory at 16k tokens)
                try:
                    seconds, peak, result = measure(modes[mode])
                except Exception as exc:   # noqa: BLE001 - OOM is a result, anything else is not
                    if mode == "eager" and _is_oom(exc):
                        eager_status, eager_dead = "OOM", True
                        gc.collect()
                        if device == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    raise
                if mode == "capture":
                    cap = result
                    del result
                if r > 0:
                    times[mode].append(seconds)
                    cpu[mode].append(measure.last_cpu)
                    if peak is not None:
                        peaks[mode].append(peak)
            print(f"[{label}] T={t}: round {r} " + ", ".join(
                f"{m}={times[m][-1]:.3f}s" for m in times if times[m] and r > 0), flush=True)
        med = {m: statistics.median(v) if v else None for m, v in times.items()}
        peak = {m: max(v) if v else None for m, v in peaks.items()}

        # On-demand costs, measured on the last capture.
        summ = [measure(lambda: capture_head_summaries(_fresh(cap)))[0] for _ in range(max(1, min(3, reps)))]
        layer = cap.num_layers // 2
        head_map = [measure(lambda: attention_map(cap, layer, 0))[0] for _ in range(max(3, reps))]
        pooled = [measure(lambda: attention_map_pooled(cap, layer, 0, 256))[0] for _ in range(max(3, reps))]
        _, summ_peak, _ = measure(lambda: capture_head_summaries(_fresh(cap)))
        row = {
            "model": label, "tokens": t, "reps": reps,
            "plain_s": med["plain"], "capture_s": med["capture"],
            "eager_s": med["eager"] if eager_status == "ok" else None, "eager_status": eager_status,
            "capture_ratio": med["capture"] / med["plain"],
            "eager_ratio": med["eager"] / med["plain"] if eager_status == "ok" else None,
            # Robustness on a shared machine: ratios within each round, and of the fastest runs.
            "capture_ratio_paired": _paired(times["capture"], times["plain"]),
            "eager_ratio_paired": _paired(times["eager"], times["plain"]) if eager_status == "ok" else None,
            "capture_ratio_min": min(times["capture"]) / min(times["plain"]),
            "eager_ratio_min": (min(times["eager"]) / min(times["plain"])) if eager_status == "ok" else None,
            "cpu_capture_ratio": statistics.median(cpu["capture"]) / statistics.median(cpu["plain"]),
            "cpu_eager_ratio": (statistics.median(cpu["eager"]) / statistics.median(cpu["plain"])
                                if eager_status == "ok" else None),
            "times": times, "cpu_times": cpu,
            "summaries_s": statistics.median(summ),
            "summaries_over_plain": statistics.median(summ) / med["plain"],
            "head_map_ms": 1000 * statistics.median(head_map),
            "pooled_map_ms": 1000 * statistics.median(pooled),
            "capture_store_gib": capture_bytes(cap) / GIB,
            "capture_layers_kept": len(cap.residual_layers), "notes": cap.notes,
        }
        if device == "cuda":
            row.update({
                "plain_peak_gib": peak["plain"], "capture_peak_gib": peak["capture"],
                "eager_peak_gib": peak["eager"], "summaries_peak_gib": summ_peak,
                "capture_extra_gib": peak["capture"] - peak["plain"],
                "eager_extra_gib": (peak["eager"] - peak["plain"]) if peak["eager"] is not None else None,
            })
        rows.append(row)
        print(json.dumps(row), flush=True)
        del cap
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def _paired(a: list[float], b: list[float]) -> float | None:
    pairs = [x / y for x, y in zip(a, b)]
    return statistics.median(pairs) if pairs else None


def _fresh(cap: Capture) -> Capture:
    """Summaries are computed anew each call: a capture keeps none (they live in a Derived beside it)."""
    return cap


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".3f", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def write_report(device: str, info: dict, rows: list[dict], goals: dict, extra: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    info = {**info, "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()]}
    payload = {"device": device, "machine": info, "runs": rows, "goals": goals, **extra,
               "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    (out / f"capture_{device}.json").write_text(json.dumps(payload, indent=1))
    lines = [f"# Capture benchmark ({device})", "",
             f"Machine: {info.get('gpu', info['cpu'])}" + (f" ×{info['gpu_count']}" if device == "cuda" else "")
             + f"; CPU {info['cpu']} ({info['cpu_count']} cores, torch threads {info['torch_threads']}); "
             f"{info['platform']}; torch {info['torch']}, transformers {info['transformers']}, "
             f"bitsandbytes {info['bitsandbytes']}. Load average (1/5/15 min) at start "
             f"{info['load_average_at_start']}, at end {info['load_average_at_end']}"
             + (" — the machine was shared; read ratios, not absolute times." if device == "cpu" else "."), "",
             f"Run {payload['when']}. Median of the timed rounds (plain, capture and eager interleaved, "
             "one warm-up round first). Ratios are to the plain forward of the same run: "
             "ratio of medians, then in brackets the median of per-round ratios and the ratio of the fastest runs.", ""]
    for key, value in extra.items():
        lines.append(f"- {key}: {value}")
    lines.append("")
    header = ["model", "T", "plain s", "capture s", "capture/plain", "(paired, min)", "CPU-time capture/plain",
              "eager s", "eager/plain", "CPU-time eager/plain",
              "summaries s", "summ./plain", "one head map ms", "pooled 256² ms", "capture store GiB"]
    if device == "cuda":
        header += ["plain peak GiB", "capture extra GiB", "eager extra GiB"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["model"], str(r["tokens"]), _fmt(r["plain_s"]), _fmt(r["capture_s"]),
                 _fmt(r["capture_ratio"], ".2f") + "×",
                 f"{_fmt(r['capture_ratio_paired'], '.2f')}×, {_fmt(r['capture_ratio_min'], '.2f')}×",
                 _fmt(r["cpu_capture_ratio"], ".2f") + "×",
                 _fmt(r["eager_s"]) if r["eager_status"] == "ok" else r["eager_status"],
                 (_fmt(r["eager_ratio"], ".2f") + "×") if r["eager_ratio"] else "–",
                 (_fmt(r["cpu_eager_ratio"], ".2f") + "×") if r["cpu_eager_ratio"] else "–",
                 _fmt(r["summaries_s"]), _fmt(r["summaries_over_plain"], ".2f") + "×",
                 _fmt(r["head_map_ms"], ".1f"), _fmt(r["pooled_map_ms"], ".1f"), _fmt(r["capture_store_gib"], ".3f")]
        if device == "cuda":
            cells += [_fmt(r["plain_peak_gib"], ".2f"), _fmt(r["capture_extra_gib"], ".2f"),
                      _fmt(r["eager_extra_gib"], ".2f") if r["eager_status"] == "ok" else r["eager_status"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Goals: " + "; ".join(f"{k}: {v}" for k, v in goals.items())]
    (out / f"capture_{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

def run_cpu(args) -> None:
    rows = []
    for precision in args.precisions.split(","):
        loaded = load_model(LoadConfig(source="embedded", precision=precision))
        label = f"SmolLM2-135M {precision}"
        rows += bench_model(loaded.model, label, args.sizes or [128, 512, 1024], args.reps, "cpu")
        if args.profile and precision == args.precisions.split(",")[0]:
            profile_capture(loaded.model, args.profile, "cpu")
        del loaded
        gc.collect()
    goals = {"capture/plain at 512": "≤ 1.15×"}
    write_report("cpu", machine_info("cpu"), rows, goals, {"model": "embedded SmolLM2-135M-Instruct (30 layers, "
                                                           "9 heads, 3 KV heads), random token ids"})


def run_cuda(args) -> None:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    if not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    t0 = time.perf_counter()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map={"": 0}, attn_implementation="sdpa").eval()
    load_s = time.perf_counter() - t0
    resident = torch.cuda.memory_allocated() / GIB
    rows = bench_model(model, "Llama-3.1-8B arch NF4", args.sizes or [512, 2048, 4096, 16384], args.reps, "cuda")
    if args.profile:
        profile_capture(model, args.profile, "cuda")
    goals = {"capture/plain at 4096": "≤ 1.25×", "capture extra peak at 4096": "≤ 2 GiB",
             "summaries at 4096": "≤ 1 plain forward", "one head map at 4096": "≤ 50 ms",
             "16384": "runs on one H100"}
    write_report("cuda", machine_info("cuda"), rows, goals,
                 {"model": f"{args.checkpoint} (Llama-3.1-8B architecture, random weights, NF4 double-quant, "
                           f"bf16 compute), random token ids",
                  "load_s": round(load_s, 1), "resident_gib": round(resident, 2)})


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
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="prompt lengths")
    p.add_argument("--reps", type=int, default=5, help="timed rounds per length (after one warm-up)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--profile", type=int, metavar="T",
                   help="also profile one capture of T tokens into bench/results/capture_profile_<device>.md")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (run_cuda if args.device == "cuda" else run_cpu)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
