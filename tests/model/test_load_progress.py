"""Weight loading and GGUF conversion report step counts to a sink that asks for them."""
from __future__ import annotations

import shutil
import threading

import pytest

from explorer.model.embedded import embedded_gguf_path, gguf_to_safetensors
from explorer.model.loading import LoadConfig, load_model
from explorer.model.progress import counting_steps


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.steps: list[tuple[str, int, int]] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)

    def fraction(self, phase: str, done: int, total: int) -> None:
        self.steps.append((phase, done, total))


def test_weight_loading_reports_steps_up_to_the_total(tiny_folder):
    rec = Recorder()
    load_model(LoadConfig(source=str(tiny_folder), precision="fp32"), progress=rec)
    weights = [s for s in rec.steps if s[0] == "Loading weights"]
    assert weights, rec.steps
    assert weights[-1][1] == weights[-1][2] > 1   # the last report is "all done"
    assert [d for _, d, _ in weights] == sorted(d for _, d, _ in weights)
    assert any(line.startswith("Loaded") for line in rec.lines)


def test_a_plain_callable_still_gets_only_lines(tiny_folder):
    lines: list[str] = []
    load_model(LoadConfig(source=str(tiny_folder), precision="fp32"), progress=lines.append)
    assert lines and all(isinstance(x, str) for x in lines)


def test_counts_go_only_to_the_thread_that_loads(tiny_folder):
    """A second thread's load with no sink must not report into the first thread's sink."""
    rec = Recorder()
    other = threading.Thread(target=lambda: load_model(LoadConfig(source=str(tiny_folder), precision="fp32")))
    with counting_steps(rec):
        other.start()
        other.join()
    assert rec.steps == []


@pytest.mark.slow
def test_gguf_conversion_reports_reading_and_writing(tmp_path):
    gguf = tmp_path / "model.gguf"
    shutil.copy(embedded_gguf_path(), gguf)
    rec = Recorder()
    gguf_to_safetensors(gguf, tmp_path / "cache", progress=rec)
    phases = {p for p, _, _ in rec.steps}
    assert "Writing the converted folder" in phases
    assert any("GGUF" in p for p in phases), phases


def test_a_load_on_the_model_worker_hands_step_counts_to_the_waiting_thread(tiny_folder):
    """The page draws the bar: counts made on the worker thread reach the caller's own thread."""
    from explorer.model.worker import ModelWorker

    class ThreadRecorder(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def fraction(self, phase: str, done: int, total: int) -> None:
            self.threads.add(threading.current_thread().name)
            super().fraction(phase, done, total)

    worker = ModelWorker(name="test-progress-worker")
    try:
        rec = ThreadRecorder()
        worker.load(LoadConfig(source=str(tiny_folder), precision="fp32"), progress=rec)
        weights = [s for s in rec.steps if s[0] == "Loading weights"]
        assert weights and weights[-1][1] == weights[-1][2] > 1
        assert rec.threads == {threading.current_thread().name}      # never the worker's thread
        assert rec.lines                                            # text lines still arrive too
    finally:
        worker.shutdown()
