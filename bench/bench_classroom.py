"""Benchmark: a class on one server. Simulated students chat through the model worker as the app runs it.

Each student is a fresh thread (as a Streamlit rerun is) that sends its own chat prompt as a
WorkerStream (the chat page's path), reads the answer to the end, then captures its turn through
the worker (the internals page's path). The worker decodes every waiting answer in one batch
(explorer/model/decode_batch.py) and runs captures between two decode steps; captures of several
students waiting at the same moment share one batched forward (explorer/record/capture_batch.py).

Two ways of arriving: all at once (the teacher says "go"), and spread evenly over --spread-s.
First, one student's stream three ways (each on a prompt no earlier run used, so no shape is warm):
the decode core called directly on the main thread, the same through the worker and a WorkerStream
(the app's path), and on a GPU the core with cuDNN attention kept, twice on one prompt (new shapes,
then the same shapes again: cuDNN builds a graph per shape and per thread, see decode_batch.py).
Reported per run: total tok/s (all students' new tokens over the run's wall time), p50/p95 time
to first token (from the student's send), each student's own tok/s (after its first token;
min/median), and p95 capture wait (from the capture's submit until the worker started it).

    python bench/bench_classroom.py --device cpu                       # embedded SmolLM2 NF4: 1 and 4 students
    python bench/bench_classroom.py --device cuda --checkpoint DIR     # Llama-3.1-8B arch NF4: 1 8 16 32
    python bench/bench_classroom.py --device cuda --checkpoint DIR --students 1 16   # a quick check

Writes bench/results/classroom_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.compare.measure import machine_info
from explorer.model.decode_batch import DecodeBatch, Row, decode_all
from explorer.model.generation import GenerateOptions, conversation, new_batch, prepare
from explorer.model.loading import LoadConfig, load_model, release_memory
from explorer.model.prompts import stop_ids
from explorer.model.worker import ModelWorker
from explorer.model.worker_stream import WorkerStream
from explorer.record.capture import CaptureOptions
from explorer.record.capture_batch import submit_capture

TOPICS = ["the sea", "volcanoes", "bees", "the moon", "trains", "rain", "castles", "whales", "deserts", "clocks",
          "bridges", "owls", "glaciers", "rivers", "kites", "comets"]


def prompt_of(i: int) -> str:
    return f"Student {i}: write a short paragraph about {TOPICS[i % len(TOPICS)]}."


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def student(worker: ModelWorker, i: int, options: GenerateOptions, do_capture: bool, out: list) -> None:
    """One student's turn, in a fresh thread: chat, then capture the turn."""
    sent = time.perf_counter()
    stream = WorkerStream(worker, conversation(prompt_of(i)), options, f"student{i}")
    stream.wait_started(alive=lambda: True)
    "".join(stream.iterate(lambda: True))
    done = time.perf_counter()
    r = stream.result
    row = {"student": i, "sent": sent, "done": done, "new_tokens": r.new_tokens,
           "ttft_from_send": (stream.first_token_at or done) - sent, "queued": r.queued_seconds,
           "own_tps": (r.new_tokens - 1) / max(done - (stream.first_token_at or sent), 1e-9),
           "shared_with": r.shared_with}
    if do_capture:
        ids = r.sequence_ids
        req = submit_capture(worker, ids, CaptureOptions(), f"student{i}")   # the internals page's path
        req.wait(timeout=600)
        row["capture_wait"] = (req.started or req.submitted) - req.submitted
        row["capture_total"] = time.perf_counter() - req.submitted
        row["capture_ran_with"] = req.ran_with
    out.append(row)


def _direct(loaded, prompt: str, options: GenerateOptions, batch: DecodeBatch) -> float:
    """The decode core on this (the main) thread: own tok/s from the first token to the last."""
    row = Row(prepare(loaded, conversation(prompt), options.max_new_tokens), options)
    decode_all(batch, [row])
    return (len(row.new) - 1) / max(row.finished - row.first, 1e-9)


def _through_worker(worker: ModelWorker, prompt: str, options: GenerateOptions) -> float:
    """The app's path: a fresh thread sends a WorkerStream and reads it (own tok/s as the student sees it)."""
    box: dict = {}

    def read() -> None:
        stream = WorkerStream(worker, conversation(prompt), options, "one-stream")
        stream.wait_started(alive=lambda: True)
        "".join(stream.iterate(lambda: True))
        box["tps"] = (stream.result.new_tokens - 1) / max(time.perf_counter() - stream.first_token_at, 1e-9)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return box["tps"]


def one_stream(loaded, worker: ModelWorker, options: GenerateOptions, cuda: bool) -> dict:
    """One student: where the tok/s goes between the decode core and the app's path."""
    prompts = iter(f"One student, run {k}: write a story about {TOPICS[k]} and {TOPICS[-k - 1]}, please."
                   for k in range(len(TOPICS)))
    out = {"direct_tok_s": _direct(loaded, next(prompts), options, new_batch(loaded)),
           "worker_tok_s": _through_worker(worker, next(prompts), options)}
    if cuda:
        again = next(prompts)
        keep = DecodeBatch(loaded.model, stop_ids(loaded), cudnn_sdpa=True)
        out["cudnn_new_shapes_tok_s"] = _direct(loaded, again, options, keep)
        out["cudnn_same_shapes_tok_s"] = _direct(loaded, again, options, keep)
    return {k: round(v, 2) for k, v in out.items()}


def run_class(worker: ModelWorker, students: int, arrival: str, spread_s: float, options: GenerateOptions,
              do_capture: bool) -> dict:
    rows: list[dict] = []
    threads = [threading.Thread(target=student, args=(worker, i, options, do_capture, rows)) for i in range(students)]
    t0 = time.perf_counter()
    for i, t in enumerate(threads):
        if arrival == "spread" and students > 1:
            time.sleep(max(0.0, t0 + spread_s * i / students - time.perf_counter()))   # arrival schedule
        t.start()
    for t in threads:
        t.join()
    wall = max(r["done"] for r in rows) - min(r["sent"] for r in rows)
    tokens = sum(r["new_tokens"] for r in rows)
    own = [r["own_tps"] for r in rows]
    ttft = [r["ttft_from_send"] for r in rows]
    cap = [r["capture_wait"] for r in rows if "capture_wait" in r]
    cap_run = [r["capture_total"] - r["capture_wait"] for r in rows if "capture_wait" in r]
    return {"students": students, "arrival": arrival, "new_tokens_each": options.max_new_tokens,
            "total_tok_s": round(tokens / wall, 2), "ttft_p50_s": round(pct(ttft, 0.5), 3),
            "ttft_p95_s": round(pct(ttft, 0.95), 3), "own_tok_s_min": round(min(own), 2),
            "own_tok_s_median": round(statistics.median(own), 2),
            "capture_wait_p95_s": round(pct(cap, 0.95), 3) if cap else None,
            "capture_run_p50_s": round(pct(cap_run, 0.5), 3) if cap_run else None,
            "capture_total_p95_s": round(pct([r["capture_total"] for r in rows if "capture_total" in r], 0.95), 3)
            if cap else None,
            "captures_per_forward_max": max((r.get("capture_ran_with", 1) for r in rows), default=None),
            "most_answers_together": max(r["shared_with"] for r in rows) + 1, "wall_s": round(wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--checkpoint", help="model folder (cuda: the random Llama-3.1-8B checkpoint); default embedded")
    ap.add_argument("--precision", default="nf4")
    ap.add_argument("--students", type=int, nargs="+", help="class sizes (cpu: 1 4; cuda: 1 8 16 32)")
    ap.add_argument("--new-tokens", type=int, help="answer length, fixed (cpu: 32; cuda: 128)")
    ap.add_argument("--arrivals", nargs="+", choices=("at-once", "spread"), default=["at-once", "spread"])
    ap.add_argument("--spread-s", type=float, default=10.0)
    ap.add_argument("--no-capture", action="store_true")
    ap.add_argument("--note", default="", help="a line for the report (e.g. what else ran on the machine)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    students = args.students or ([1, 8, 16, 32] if cuda else [1, 4])
    new_tokens = args.new_tokens or (128 if cuda else 32)
    if cuda:
        torch.cuda.set_device(0)
    loaded = load_model(LoadConfig(source=args.checkpoint or "embedded", precision=args.precision))
    worker = ModelWorker()
    worker.adopt(loaded)
    options = GenerateOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens, timeout_s=600)
    runs = []
    try:
        run_class(worker, 1, "at-once", 0.0, GenerateOptions(max_new_tokens=4, min_new_tokens=4), False)  # warm-up
        single = one_stream(loaded, worker, options, cuda)
        print("one stream", single, flush=True)
        for arrival in args.arrivals:
            for n in students:
                if arrival == "spread" and n == 1:
                    continue                       # one student arrives the same way either way
                print(f"--- {n} students, {arrival}", flush=True)
                runs.append(run_class(worker, n, arrival, args.spread_s, options, not args.no_capture))
                print(runs[-1], flush=True)
    finally:
        worker.unload()
        worker.shutdown()
        del loaded
        release_memory()
    write_report(args, machine_info(), runs, single)
    return 0


def write_report(args, info: dict, runs: list[dict], single: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    one = next((r["total_tok_s"] for r in runs if r["students"] == 1), None)
    for r in runs:
        r["total_vs_one"] = round(r["total_tok_s"] / one, 2) if one else None
    (out / f"classroom_{args.device}.json").write_text(json.dumps(
        {"run": stamp, "command": "python bench/bench_classroom.py " + " ".join(sys.argv[1:]), "machine": info,
         "note": args.note, "one_stream": single, "runs": runs}, indent=2) + "\n")
    where = info.get("gpu") or info.get("cpu", "")
    lines = [f"# Classroom benchmark ({args.device})", "",
             f"Machine: {where}; {info.get('cores')} cores; {info.get('platform')}; torch {info.get('torch')}, "
             f"transformers {info.get('transformers')}, bitsandbytes {info.get('bitsandbytes')}.",
             f"Model: {args.checkpoint or 'embedded SmolLM2-135M-Instruct'} in {args.precision}.",
             *([f"Note: {args.note}"] if args.note else []), "",
             f"Run {stamp}. `python bench/bench_classroom.py {' '.join(sys.argv[1:])}`. Each student is a fresh "
             "thread that chats through the model worker (WorkerStream, as the chat page) and then captures its "
             "turn through the worker. Answers have a fixed length (EOS cannot end them early). Time to first "
             "token is counted from the student's send; own tok/s from its first token to its last; capture "
             "wait from the capture's submit until the worker starts it, capture run from then until the student "
             "has it, capture total the two together (what the student waits); captures per forward: the most "
             "students' captures that shared one batched forward.", "",
             "One student's own tok/s, each on a prompt no earlier run used: the decode core on the main thread "
             f"{single['direct_tok_s']}, through the worker and a WorkerStream {single['worker_tok_s']}"
             + (f"; the core with cuDNN attention kept, new shapes {single['cudnn_new_shapes_tok_s']}, the same "
                f"shapes again {single['cudnn_same_shapes_tok_s']}" if "cudnn_new_shapes_tok_s" in single else "")
             + ".", "",
             "| students | arrival | total tok/s | × one | TTFT p50 s | TTFT p95 s | own tok/s min | own tok/s median "
             "| capture wait p95 s | capture run p50 s | capture total p95 s | captures per forward | most together |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['students']} | {r['arrival']} | {r['total_tok_s']} | {r['total_vs_one']} | "
                     f"{r['ttft_p50_s']} | {r['ttft_p95_s']} | {r['own_tok_s_min']} | {r['own_tok_s_median']} | "
                     f"{r['capture_wait_p95_s']} | {r.get('capture_run_p50_s')} | {r.get('capture_total_p95_s')} | "
                     f"{r.get('captures_per_forward_max')} | "
                     f"{r['most_answers_together']} |")
    (out / f"classroom_{args.device}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
