"""Benchmark: the model called the way the app calls it, against the main-thread baseline, in one run.

The app never calls the model from the main thread: Streamlit runs every rerun in a fresh
thread, and every model call goes to the model worker (explorer/model/worker.py). So each
"app" figure here starts a fresh thread per request (as the script runner does), which submits
to one long-lived ModelWorker and reads the answer as the chat page does (WorkerStream). The
"main" figures call the same functions from the main thread. "old app" is the path before the
worker: stream_generate from a fresh thread, which starts yet another thread per answer.

Measured, per precision:
  - decode: tokens/s of one answer of N new tokens (wall time of the whole call, prefill included);
  - capture: capture() of T tokens through the worker vs a plain forward (use_cache=False,
    logits_to_keep=1) and capture() in the main thread;
  - sessions: 4 sessions asking at once (queued on the worker, one after another) vs one alone:
    total tokens/s, and each session's time to first token counted from its submit;
  - cuda: the app path with cuDNN's SDPA backend on and off.

    python bench/bench_app_path.py --device cpu                       # embedded SmolLM2, small sizes
    python bench/bench_app_path.py --device cuda --checkpoint DIR     # Llama-3.1-8B arch, bf16 and NF4

Writes bench/results/app_path_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.compare.run import machine_info
from explorer.model.generation import GenerateOptions, conversation, generate, stream_generate
from explorer.model.loading import LoadConfig, load_model, release_memory
from explorer.model.worker import ModelWorker
from explorer.model.worker_stream import WorkerStream
from explorer.record.capture import CaptureOptions, capture

PROMPT = "Write a long story about a lighthouse keeper and the sea."


def FixedLength(max_new_tokens: int, **kwargs) -> GenerateOptions:
    """Exactly max_new_tokens (EOS cannot end a run early): equal work in every path."""
    return GenerateOptions(max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, **kwargs)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def in_fresh_thread(fn: Callable[[], Any]) -> Any:
    """Run fn in a new thread and wait, the way Streamlit's script runner runs each rerun."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    t0 = time.perf_counter()
    value = fn()
    sync()
    return time.perf_counter() - t0, value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# ------------------------------------------------------------------------------------------ paths


def main_generate(loaded, options):
    return generate(loaded, conversation(PROMPT), options)


def app_stream(worker: ModelWorker, options, session: str = "s0"):
    """What the chat panel does in its script thread: submit, wait in the queue, read the chunks."""
    stream = WorkerStream(worker, conversation(PROMPT), options, session)
    stream.wait_started(alive=lambda: True)
    text = "".join(stream.iterate(lambda: True))
    return stream, text


def old_app_stream(loaded, options):
    stream = stream_generate(loaded, conversation(PROMPT), options)
    "".join(stream)
    return stream


def bench_decode(loaded, worker: ModelWorker, options, reps: int, label: str) -> dict:
    rounds: dict[str, list[float]] = {"main generate": [], "app stream": [], "old app stream": []}
    ttft: list[float] = []
    for path in rounds:                                  # warm-up: every path once, untimed
        _run_decode(path, loaded, worker, options)
    for _ in range(reps):                                # interleaved so drift hits all paths alike
        for path in rounds:
            seconds, (new_tokens, first) = _run_decode(path, loaded, worker, options)
            rounds[path].append(new_tokens / seconds)
            if path == "app stream" and first is not None:
                ttft.append(first)
    row = {"label": label, "new_tokens": options.max_new_tokens,
           **{f"{k} tok/s": round(median(v), 2) for k, v in rounds.items()},
           "app TTFT s (from submit)": round(median(ttft), 4)}
    row["app/main"] = round(row["app stream tok/s"] / row["main generate tok/s"], 3)
    row["old app/main"] = round(row["old app stream tok/s"] / row["main generate tok/s"], 3)
    return row


def _run_decode(path: str, loaded, worker, options) -> tuple[float, tuple[int, float | None]]:
    if path == "main generate":
        seconds, result = timed(lambda: main_generate(loaded, options))
        return seconds, (result.new_tokens, None)
    if path == "app stream":
        seconds, (stream, _text) = timed(lambda: in_fresh_thread(lambda: app_stream(worker, options)))
        return seconds, (stream.result.new_tokens, stream.time_to_first_token_from_submit)
    seconds, stream = timed(lambda: in_fresh_thread(lambda: old_app_stream(loaded, options)))
    return seconds, (stream.result.new_tokens, None)


def bench_capture(loaded, worker: ModelWorker, tokens: int, reps: int, label: str) -> dict:
    model = loaded.model
    vocab = min(model.get_input_embeddings().weight.shape[0], len(loaded.tokenizer))
    ids = torch.randint(0, vocab, (tokens,), generator=torch.Generator().manual_seed(tokens))
    ids_dev = ids[None].to(model.get_input_embeddings().weight.device)
    options = CaptureOptions()

    def plain():
        with torch.inference_mode():
            return model(input_ids=ids_dev, use_cache=False, logits_to_keep=1).logits.shape

    paths = {
        "main plain forward": plain,
        "main capture": lambda: capture(model, None, ids, options),
        "app capture": lambda: in_fresh_thread(
            lambda: worker.call(lambda m: capture(m.model, None, ids, options), "s0")),
        "app plain forward": lambda: in_fresh_thread(lambda: worker.call(lambda m: plain(), "s0")),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        timed(fn)
    for _ in range(reps):
        for name, fn in paths.items():
            seconds, _ = timed(fn)
            times[name].append(seconds)
        gc.collect()
    row = {"label": label, "tokens": tokens, **{f"{k} s": round(median(v), 4) for k, v in times.items()}}
    row["app capture/main plain"] = round(row["app capture s"] / row["main plain forward s"], 3)
    row["main capture/main plain"] = round(row["main capture s"] / row["main plain forward s"], 3)
    return row


def bench_sessions(worker: ModelWorker, options, sessions: int, label: str) -> dict:
    """`sessions` fresh threads submit at once (as that many browser sessions would) vs one alone."""
    alone_s, (stream, _t) = timed(lambda: in_fresh_thread(lambda: app_stream(worker, options)))
    alone_tps = stream.result.new_tokens / alone_s
    results: list[tuple[WorkerStream, float]] = [None] * sessions  # type: ignore[list-item]
    start = threading.Barrier(sessions + 1)

    def one(i: int) -> None:
        start.wait()
        s, _text = app_stream(worker, options, f"s{i}")
        results[i] = (s, time.perf_counter())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    sync()
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    sync()
    wall = max(done for _s, done in results) - t0
    total_tokens = sum(s.result.new_tokens for s, _d in results)
    ttfts = sorted(s.time_to_first_token_from_submit or float("nan") for s, _d in results)
    return {"label": label, "sessions": sessions, "mode": "decoded together in the worker's one batch",
            "alone tok/s": round(alone_tps, 2), "together total tok/s": round(total_tokens / wall, 2),
            "together/alone": round(total_tokens / wall / alone_tps, 3),
            "TTFT s per session (from submit, sorted)": [round(x, 3) for x in ttfts],
            "alone TTFT s": round(stream.time_to_first_token_from_submit or float("nan"), 3)}


def set_cudnn_sdp(worker: ModelWorker, enabled: bool) -> None:
    """The flag is process-wide; set it through the worker so the change is ordered with its calls."""
    worker.submit(lambda _m, _r: torch.backends.cuda.enable_cudnn_sdp(enabled), "bench", load_id=None,
                  needs_model=False).wait()


# ------------------------------------------------------------------------------------------ runs


def run_precision(cfg: LoadConfig, label: str, args) -> list[tuple[str, dict]]:
    loaded = load_model(cfg)
    label = f"{label} {loaded.precision}"
    worker = ModelWorker()
    worker.adopt(loaded)
    options = FixedLength(max_new_tokens=args.new_tokens, timeout_s=600)
    rows: list[tuple[str, dict]] = []
    try:
        print(f"--- {label}: decode", flush=True)
        rows.append(("decode", bench_decode(loaded, worker, options, args.reps, label)))
        print(rows[-1][1], flush=True)
        print(f"--- {label}: capture {args.capture_tokens}", flush=True)
        rows.append(("capture", bench_capture(loaded, worker, args.capture_tokens, args.reps, label)))
        print(rows[-1][1], flush=True)
        print(f"--- {label}: {args.sessions} sessions", flush=True)
        rows.append(("sessions", bench_sessions(worker, options, args.sessions, label)))
        print(rows[-1][1], flush=True)
        if torch.cuda.is_available():
            for enabled in (False, True):
                set_cudnn_sdp(worker, enabled)
                tag = f"{label}, cuDNN SDPA {'on' if enabled else 'off'}"
                row = bench_decode(loaded, worker, options, max(2, args.reps - 1), tag)
                row.update({k: v for k, v in bench_capture(loaded, worker, args.capture_tokens,
                                                           max(2, args.reps - 1), tag).items() if k != "label"})
                rows.append(("cudnn", row))
                print(row, flush=True)
    finally:
        worker.unload()
        worker.shutdown()
        del loaded
        release_memory()
    return rows


GOALS = {"app stream / main generate": "≥ 0.95×", "app capture / main plain forward": "≤ 1.25×",
         "4 sessions together / one alone (total tok/s)": "≥ 0.9×"}


def write_report(device: str, info: dict, rows: list[tuple[str, dict]], extra: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (out / f"app_path_{device}.json").write_text(json.dumps(
        {"run": stamp, "machine": info, "goals": GOALS, **extra, "rows": [dict(kind=k, **r) for k, r in rows]},
        indent=2) + "\n")
    where = info.get("gpu") or info.get("cpu", "")
    lines = [f"# App-path benchmark ({device})", "",
             f"Machine: {where}; {info.get('cores')} cores; {info.get('platform')}; torch {info.get('torch')}, "
             f"transformers {info.get('transformers')}, bitsandbytes {info.get('bitsandbytes')}.", "",
             f"Run {stamp}. `python bench/bench_app_path.py {' '.join(sys.argv[1:])}`. Medians of the timed "
             "rounds (paths interleaved, one untimed warm-up each). *app* = a fresh thread per request (as "
             "Streamlit's script runner) submitting to the one long-lived model worker; *main* = the same "
             "functions from the main thread; *old app* = stream_generate from a fresh thread (the path before "
             "the worker: a new generate thread per answer).", ""]
    lines += [f"- {k}: {v}" for k, v in extra.items()] + [""]
    lines += ["Goals: " + "; ".join(f"{k} {v}" for k, v in GOALS.items()), ""]
    for kind, title in (("decode", "Streamed decode vs plain generate"), ("capture", "Capture vs plain forward"),
                        ("sessions", "Sessions at once"), ("cudnn", "cuDNN SDPA on vs off, app path")):
        picked = [r for k, r in rows if k == kind]
        if not picked:
            continue
        keys = list(dict.fromkeys(key for r in picked for key in r))
        lines += [f"## {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(key, "")) for key in keys) + " |" for r in picked] + [""]
    (out / f"app_path_{device}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoint", help="cuda: folder written by make_random_checkpoint.py (with a tokenizer)")
    p.add_argument("--precisions", help="default: cuda bf16,nf4; cpu fp32")
    p.add_argument("--new-tokens", type=int, help="default: cuda 64, cpu 8")
    p.add_argument("--capture-tokens", type=int, help="default: cuda 4096, cpu 128")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    args.new_tokens = args.new_tokens or (64 if cuda else 8)
    args.capture_tokens = args.capture_tokens or (4096 if cuda else 128)
    precisions = (args.precisions or ("bf16,nf4" if cuda else "fp32")).split(",")
    source, label = ((args.checkpoint, "Llama-3.1-8B arch") if cuda else
                     (args.checkpoint, "checkpoint") if args.checkpoint else ("embedded", "SmolLM2-135M"))
    rows: list[tuple[str, dict]] = []
    extra = {"model": f"{source} ({label}{', random weights' if cuda else ''})",
             "prompt": f"{PROMPT!r} through the chat template", "new tokens": args.new_tokens,
             "capture tokens": f"{args.capture_tokens} random ids", "reps": args.reps}
    failed = 0
    for precision in precisions:
        try:
            rows += run_precision(LoadConfig(source=source, precision=precision), label, args)
        except Exception as exc:  # noqa: BLE001 - keep what the other precisions measured
            failed += 1
            extra[f"{precision} failed"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(extra[f"{precision} failed"], flush=True)
        write_report(args.device, machine_info(), rows, extra)     # after each: a later crash loses nothing
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
