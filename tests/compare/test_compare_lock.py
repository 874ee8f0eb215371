"""One comparison at a time across threads (sessions), and a cancel that stops a run between steps."""
from __future__ import annotations

import threading
import time

import pytest

from explorer.compare.lock import CompareBusy, CompareLock
from explorer.compare.run import CANCELLED, CompareConfig, run_comparison


def test_a_second_session_is_refused_with_who_holds_it_while_the_first_compares():
    lock = CompareLock()
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        lock.acquire("session-a", "2 model(s) × 1 precision(s)")
        held.set()
        release.wait(5)
        lock.release("session-a")

    def second() -> None:
        try:
            lock.acquire("session-b", "1 model(s)")
        except CompareBusy as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    held.wait(5)
    b = threading.Thread(target=second)
    b.start()
    b.join(5)
    assert len(errors) == 1 and "Someone else is running a comparison (2 model(s)" in str(errors[0])
    assert lock.holder is not None and lock.holder.owner == "session-a"
    lock.release("session-b")                       # not the holder: ignored
    assert lock.holder.owner == "session-a"
    release.set()
    a.join(5)
    assert lock.holder is None
    lock.acquire("session-b", "1 model(s)")         # free again
    lock.release("session-b")


def test_a_waiting_session_gets_the_lock_when_the_first_releases():
    lock = CompareLock()
    lock.acquire("a", "x")
    threading.Timer(0.2, lock.release, args=("a",)).start()
    started = time.perf_counter()
    assert lock.acquire("b", "y", wait_s=5).owner == "b"
    assert 0.1 < time.perf_counter() - started < 5
    with pytest.raises(CompareBusy):
        lock.acquire("c", "z", wait_s=0.1)


def test_cancel_stops_before_the_next_run_and_marks_the_interrupted_one(tiny_folder):
    cancel = threading.Event()
    config = CompareConfig([tiny_folder], ["fp32", "bf16", "fp16"], ["one", "two", "three"], max_new_tokens=2,
                           drift=False, warmup=False)

    def stop_during_second_prompt(line: str) -> None:
        if "prompt 2 of 3" in line:
            cancel.set()

    result = run_comparison(config, progress=stop_during_second_prompt, cancel=cancel)
    assert len(result.runs) == 1                    # fp32 only: bf16 and fp16 never started
    run = result.runs[0]
    assert run.error == CANCELLED and len(run.outputs) == 2
