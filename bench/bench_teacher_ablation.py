"""Benchmark: a teacher's "Answer again with heads … off" while the class is streaming.

Students stream long answers through the model worker (WorkerStream, the chat page's path, each in
a fresh thread). Once every student has its first text, the teacher, in a fresh thread too, asks
for a greedy answer with some heads off, two ways:

- `alone`: one model-worker call with hooks on the whole model (record/intervention_hooks.intervene),
  the only way before row edits, and still the way for a mean ablation or a patch; the class's
  decode batch waits at its next step until the call returns;
- `row`: a WorkerStream whose row carries the heads off (record/row_interventions.py): it joins the
  class's decode batch, and the students' rows never see the hooks.

Reported per way: the teacher's answer time, the longest pause any student's answer made between
two tokens while the teacher's answer ran (against the median pause before it), and the class's
tokens per second during it against before it (token times taken on the worker, as each row's
token is chosen).

    python bench/bench_teacher_ablation.py --device cpu                      # embedded SmolLM2 NF4, 3 students
    python bench/bench_teacher_ablation.py --device cuda --checkpoint DIR    # Llama-3.1-8B arch NF4, 16 students

Writes bench/results/teacher_ablation_<device>.json and .md.
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
from explorer.model.generation import GenerateOptions, conversation, generate
from explorer.model.loading import LoadConfig, load_model, release_memory
from explorer.model.worker import ModelWorker
from explorer.model.worker_stream import WorkerStream
from explorer.record.intervention_hooks import intervene
from explorer.record.interventions import parse, to_short
from explorer.record.row_interventions import RowInterventions

TOPICS = ["the sea", "volcanoes", "bees", "the moon", "trains", "rain", "castles", "whales", "deserts", "clocks",
          "bridges", "owls", "glaciers", "rivers", "kites", "comets"]
TEACHER = "Why is the sky blue? Explain it to a class."


class TokenClock:
    """Wraps a row's streamer: the time each new token was chosen (text pieces span several tokens,
    and random weights make words of any length)."""

    def __init__(self, inner, times: list[float]) -> None:
        self.inner, self.times, self.prompt_seen = inner, times, False

    def put(self, ids) -> None:
        if self.prompt_seen:
            self.times.append(time.perf_counter())
        self.prompt_seen = True               # the first put is the prompt
        self.inner.put(ids)

    def end(self) -> None:
        self.inner.end()


class TimedStream(WorkerStream):
    """The chat page's WorkerStream, its row's tokens timed on the worker thread."""

    def __init__(self, *args, **kwargs) -> None:
        self.times: list[float] = []
        super().__init__(*args, **kwargs)

    def _row(self, loaded, req):
        row = super()._row(loaded, req)
        row.streamer = TokenClock(row.streamer, self.times)
        return row


class Student:
    """A student streaming a long answer, read in its own thread as the chat page reads it."""

    def __init__(self, worker: ModelWorker, i: int, options: GenerateOptions) -> None:
        self.stream = TimedStream(worker, conversation(f"Student {i}: write a long story about {TOPICS[i % 16]}."),
                                  options, f"student{i}")
        self.times = self.stream.times
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for _ in self.stream.iterate(lambda: True):
                pass
        except Exception:  # noqa: BLE001 - a cancelled stream ends here
            pass


def _gaps(times: list[float], start: float, end: float) -> list[float]:
    """Pauses between consecutive tokens that overlap [start, end]."""
    return [b - a for a, b in zip(times, times[1:], strict=False) if b > start and a < end]


def teacher_answer(worker: ModelWorker, way: str, specs, options: GenerateOptions) -> tuple[float, float, str]:
    """The teacher's answer from a fresh thread: (start, end, text)."""
    box: dict = {}

    def ask() -> None:
        box["start"] = time.perf_counter()
        if way == "alone":
            def call(loaded, _req):
                with intervene(loaded.model, specs):
                    return generate(loaded, conversation(TEACHER), options)
            result = worker.submit(call, "teacher").wait(timeout=900)
        else:
            stream = WorkerStream(worker, conversation(TEACHER), options, "teacher",
                                  edit=RowInterventions(tuple(specs)))
            "".join(stream.iterate(lambda: True))
            result = stream.result
        box["end"] = time.perf_counter()
        box["text"] = result.text

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    return box["start"], box["end"], box["text"]


def run_way(worker: ModelWorker, way: str, students: int, specs, student_options: GenerateOptions,
            teacher_options: GenerateOptions, lead_s: float) -> dict:
    class_ = [Student(worker, i, student_options) for i in range(students)]
    t0 = time.perf_counter()
    while any(not s.times for s in class_) and time.perf_counter() - t0 < 600:
        time.sleep(0.02)
    time.sleep(lead_s)                                   # a steady stream before the teacher asks
    start, end, text = teacher_answer(worker, way, specs, teacher_options)
    for s in class_:
        s.stream.cancel()
    for s in class_:
        s.thread.join(60)
    before = [g for s in class_ for g in _gaps(s.times, start - lead_s, start)]
    during = [max(_gaps(s.times, start, end), default=end - start) for s in class_]
    tokens_before = sum(sum(1 for t in s.times if start - lead_s <= t < start) for s in class_) / lead_s
    tokens_during = sum(sum(1 for t in s.times if start <= t < end) for s in class_) / max(end - start, 1e-9)
    return {"way": way, "students": students, "teacher_s": round(end - start, 3),
            "longest_student_pause_s": round(max(during), 3),
            "median_pause_before_s": round(statistics.median(before), 3) if before else None,
            "class_tok_s_before": round(tokens_before, 2), "class_tok_s_during": round(tokens_during, 2),
            "teacher_text": text[:120]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--checkpoint", help="model folder (cuda: the random Llama-3.1-8B checkpoint); default embedded")
    ap.add_argument("--precision", default="nf4")
    ap.add_argument("--students", type=int, help="cpu: 3; cuda: 16")
    ap.add_argument("--teacher-tokens", type=int, help="the teacher's answer length (cpu: 48; cuda: 128)")
    ap.add_argument("--heads", default="h14.2,h20.5", help="short form (the README's example by default)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(0)
    students = args.students or (16 if cuda else 3)
    teacher_tokens = args.teacher_tokens or (128 if cuda else 48)
    specs = parse(args.heads)
    loaded = load_model(LoadConfig(source=args.checkpoint or "embedded", precision=args.precision))
    worker = ModelWorker()
    worker.adopt(loaded)
    teacher_options = GenerateOptions(max_new_tokens=teacher_tokens, min_new_tokens=teacher_tokens, timeout_s=900)
    student_options = GenerateOptions(max_new_tokens=4096, min_new_tokens=4096, timeout_s=900)  # cancelled after
    lead_s = 2.0 if cuda else 4.0
    runs = []
    try:
        worker.call(lambda m: generate(m, conversation("Hi"), GenerateOptions(max_new_tokens=2)))   # warm-up
        for way in ("alone", "row", "alone", "row"):      # twice each, interleaved: the machine drifts
            runs.append(run_way(worker, way, students, specs, student_options, teacher_options, lead_s))
            print(runs[-1], flush=True)
    finally:
        worker.unload()
        worker.shutdown()
        del loaded
        release_memory()
    same = len({r["teacher_text"] for r in runs}) == 1
    write_report(args, machine_info(), runs, to_short(specs), same)
    return 0


def write_report(args, info: dict, runs: list[dict], heads: str, same: bool) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (out / f"teacher_ablation_{args.device}.json").write_text(json.dumps(
        {"run": stamp, "command": "python bench/bench_teacher_ablation.py " + " ".join(sys.argv[1:]),
         "machine": info, "heads": heads, "same_teacher_answer_every_run": same, "runs": runs}, indent=2) + "\n")
    where = info.get("gpu") or info.get("cpu", "")
    lines = [f"# A teacher's answer with heads off while the class streams ({args.device})", "",
             f"Machine: {where}; {info.get('cores')} cores; torch {info.get('torch')}, transformers "
             f"{info.get('transformers')}, bitsandbytes {info.get('bitsandbytes')}. Model: "
             f"{args.checkpoint or 'embedded SmolLM2-135M-Instruct'} in {args.precision}. Heads off: {heads}.", "",
             f"Run {stamp}. `python bench/bench_teacher_ablation.py {' '.join(sys.argv[1:])}`. `alone`: one "
             "worker call with hooks on the whole model (the class's batch waits for it); `row`: the teacher's "
             "row in the class's batch carries the hooks. Pauses are between two tokens of a student's answer, "
             "timed on the worker as each is chosen; tok/s are the whole class's. The teacher's answer was "
             + ("the same text in every run." if same else "not the same text in every run (batched on a GPU, "
                "cuBLAS picks its kernels by batch size, so rows are not bit-exact: see decode_batch.py)."), "",
             "| way | students | teacher's answer s | longest student pause s | median pause before s "
             "| class tok/s before | during |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['way']} | {r['students']} | {r['teacher_s']} | {r['longest_student_pause_s']} | "
                     f"{r['median_pause_before_s']} | {r['class_tok_s_before']} | "
                     f"{r['class_tok_s_during']} |")
    (out / f"teacher_ablation_{args.device}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
