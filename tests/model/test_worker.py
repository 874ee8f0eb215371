"""The model worker: one thread runs every model call, sessions queue fairly, cancel works queued or
running, errors come back to the caller, loads are requests too, and a replaced model is noticed."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from explorer.model.errors import ModelReplaced, user_message
from explorer.model.generation import GenerateOptions, GenerationError, conversation, generate, generate_batch
from explorer.model.loading import LoadConfig, LoadError, load_model
from explorer.model.worker import ModelWorker, NoModelLoaded, RequestCancelled
from explorer.model.worker_stream import WorkerStream
from tests.tiny_models import save_tiny_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, embedded_tokenizer):
    tokenizer = embedded_tokenizer
    root = tmp_path_factory.mktemp("worker")
    return {f: save_tiny_folder(f, root / f, tokenizer) for f in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def tiny(folders):
    return load_model(LoadConfig(source=str(folders["llama"]), precision="fp32"))


@pytest.fixture
def worker(folders, tmp_path):
    """A worker with its own resident copy of the tiny model (loads and adopts free the previous one)."""
    w = ModelWorker(status_file=tmp_path / "status.json")
    w.adopt(load_model(LoadConfig(source=str(folders["llama"]), precision="fp32")))
    yield w
    w.unload()
    w.shutdown()


def gate(worker: ModelWorker, session: str = "blocker"):
    """Occupy the worker until the returned event is set, so that later requests queue."""
    release, running = threading.Event(), threading.Event()

    def block(_loaded, _req):
        running.set()
        release.wait(10)
        return "gate"

    request = worker.submit(block, session)
    assert running.wait(5)
    return release, request


def record(order: list, label: str):
    return lambda _loaded, _req: order.append((label, threading.current_thread().name))


def test_every_request_runs_on_the_one_worker_thread_in_round_robin_order(worker):
    release, _ = gate(worker)
    order: list = []
    requests = [worker.submit(record(order, f"a{i}"), "A") for i in range(3)]
    requests += [worker.submit(record(order, "b0"), "B"), worker.submit(record(order, "c0"), "C"),
                 worker.submit(record(order, "b1"), "B")]
    release.set()
    for r in requests:
        r.wait(timeout=10)
    assert [label for label, _ in order] == ["a0", "b0", "c0", "a1", "b1", "a2"]
    assert {thread for _, thread in order} == {worker.thread.name}


def test_queue_position_counts_the_running_request_and_the_fair_order(worker):
    release, _ = gate(worker)
    hold_a0 = threading.Event()
    a = [worker.submit(lambda _m, _r: hold_a0.wait(10), "A"), worker.submit(record([], "a"), "A")]
    b = worker.submit(record([], "b"), "B")
    assert a[0].position() == 1            # only the running request is before it
    assert b.position() == 2               # A's first, then B: A's second waits for B
    assert a[1].position() == 3
    seen: list[int] = []

    def on_wait(n: int) -> None:           # each position seen releases the request ahead of it
        seen.append(n)
        (release if n == 2 else hold_a0).set()

    b.wait(on_wait=on_wait, timeout=10)
    assert seen == [2, 1]                  # counted down while it waited, then ran


def test_a_cancelled_queued_request_never_runs(worker):
    release, _ = gate(worker)
    ran: list = []
    request = worker.submit(record(ran, "x"), "A")
    request.cancel()
    assert request.position() is None
    release.set()
    with pytest.raises(RequestCancelled):
        request.wait(timeout=5)
    worker.call(lambda m: None)          # the worker is still serving
    assert ran == []


def test_a_running_generation_stops_on_cancel(worker):
    stream = WorkerStream(worker, conversation("Count to a thousand"), GenerateOptions(max_new_tokens=200), "A")
    stream.wait_started(alive=lambda: True)
    chunks = iter(stream)
    next(chunks)
    stream.cancel()
    rest = list(chunks)
    assert stream.result.stopped and stream.result.new_tokens < 200
    assert len(rest) < 199
    assert _wait_idle(worker)


def test_errors_are_raised_in_the_caller_and_the_worker_keeps_serving(worker):
    def boom(_loaded):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        worker.call(boom)
    with pytest.raises(GenerationError, match="empty"):
        list(WorkerStream(worker, [{"role": "user", "content": "  "}], GenerateOptions(max_new_tokens=2)))
    assert worker.call(lambda m: m.name) == worker.current.name


def test_a_closed_session_cancels_its_queued_request(worker):
    release, _ = gate(worker)
    alive = threading.Event()
    alive.set()
    ran: list = []
    request = worker.submit(record(ran, "x"), "gone")
    threading.Timer(0.3, alive.clear).start()
    with pytest.raises(RequestCancelled):
        request.wait(alive=alive.is_set, timeout=10)
    release.set()
    assert _wait_idle(worker) and ran == []


def test_a_stream_whose_consumer_vanished_is_stopped_by_the_worker(worker):
    stream = WorkerStream(worker, conversation("Count"), GenerateOptions(max_new_tokens=200), "A",
                          abandon_after_s=0.0)
    # nobody iterates: the worker notices that the consumer is not polling and stops at a token
    result = stream.request.future.result(timeout=30)
    assert result.stopped and result.new_tokens < 200


def test_streamed_text_on_the_worker_equals_plain_generate_and_starts_no_thread(worker, tiny):
    options = GenerateOptions(max_new_tokens=8)
    threads = threading.active_count()
    stream = WorkerStream(worker, conversation("Tell me a story"), options, "A")
    chunks, counts = [], []
    for chunk in stream:
        chunks.append(chunk)
        counts.append(threading.active_count())
    text = "".join(chunks)
    assert counts and set(counts) == {threads}
    assert stream.result.time_to_first_token is not None
    assert text == stream.result.text == generate(tiny, conversation("Tell me a story"), options).text


def test_a_load_while_requests_are_queued_runs_in_turn_and_fails_the_older_model_s_later_requests(worker, folders):
    import json

    release, _ = gate(worker)
    before = worker.load_id
    first = worker.submit(lambda m, _r: m.name, "A")                                    # queued before the load
    cfg = LoadConfig(source=str(folders["qwen2"]), precision="fp32")
    load = worker.submit(lambda _m, req: worker.registry.load(cfg, progress=req), "B", kind="load",
                         load_id=None, needs_model=False)
    stale = worker.submit(lambda m, _r: m.name, "C", load_id=before)                # made for the old model
    release.set()
    assert first.wait(timeout=30) == "llama"
    load.wait(timeout=60)
    assert worker.current.name == "qwen2" and worker.load_id > before
    with pytest.raises(ModelReplaced, match="run it again"):
        stale.wait(timeout=30)
    fresh_gen = worker.load_id
    assert worker.call(lambda m: m.name, load_id=fresh_gen) == "qwen2"
    assert json.loads(worker.status_file.read_text())["load_id"] == fresh_gen != before


def test_a_failed_load_keeps_the_resident_model_and_its_requests_valid(worker, tmp_path):
    made_for = worker.load_id
    with pytest.raises(LoadError, match="No such file"):
        worker.load(LoadConfig(source=str(tmp_path / "missing")))
    assert worker.load_id == made_for
    assert worker.call(lambda m: m.name, load_id=made_for) == "llama"


def test_no_model_is_a_clear_error(tiny):
    w = ModelWorker()
    try:
        with pytest.raises(NoModelLoaded, match="No model is loaded"):
            w.call(lambda m: m.name, timeout=10)
    finally:
        w.shutdown()


def test_the_status_file_says_when_the_worker_is_busy(worker):
    import json

    release, _ = gate(worker, "S1")
    status = json.loads(worker.status_file.read_text())
    assert status["busy"] and status["running_session"] == "S1"
    release.set()
    assert _wait_idle(worker)
    assert json.loads(worker.status_file.read_text())["busy"] is False


def test_batched_generation_leaves_the_shared_tokenizer_untouched(tiny):
    tok = tiny.tokenizer
    before = (tok.padding_side, tok.pad_token, tok.pad_token_id)
    results = generate_batch(tiny, [conversation("Hi"), conversation("A much longer question here")],
                             GenerateOptions(max_new_tokens=3))
    assert (tok.padding_side, tok.pad_token, tok.pad_token_id) == before
    assert len(results) == 2 and all(r.new_tokens >= 1 for r in results)


def _wait_idle(worker: ModelWorker, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.idle():
            return True
        time.sleep(0.02)
    return False


def test_a_cancel_stops_a_long_forward_between_two_layers(worker):
    """A capture (or a prefill) is one long forward: a cancel lands at the next decoder layer."""
    from explorer.record.capture import capture

    started, seen = threading.Event(), []
    # (the slow hook stays on this test's own model copy; the worker fixture loads a fresh one)

    def slow_capture(loaded, request):
        layers = list(loaded.model.model.layers)
        def slow(*_):
            started.set()
            time.sleep(0.5)
            seen.append(1)

        layers[1].register_forward_pre_hook(slow)
        return capture(loaded.model, loaded.tokenizer, list(range(5, 40)))

    request = worker.submit(slow_capture, "A")
    assert started.wait(10)
    request.cancel()
    with pytest.raises(RequestCancelled):
        request.wait(timeout=10)
    assert _wait_idle(worker)
    assert seen == [1]                     # stopped at the next layer: layer 1 ran once, nothing started over
    assert worker.call(lambda m: capture(m.model, m.tokenizer, list(range(5, 12))).num_tokens) == 7


def test_the_model_changed_check_is_the_loaded_model_s_own_load_id(worker, folders):
    """One mechanism: a request made for a LoadedModel fails with ModelReplaced once that model is
    retired, and the worker's generation is the resident model's `LoadedModel.load_id`."""
    old = worker.current
    assert worker.load_id == old.load_id
    adopted = load_model(LoadConfig(source=str(folders["qwen2"]), precision="fp32"))
    worker.adopt(adopted)                                  # through ModelRegistry.adopt: the old one retires
    assert old.retired and worker.current is adopted and worker.load_id == adopted.load_id
    with pytest.raises(ModelReplaced):
        old.ensure_current()
    with pytest.raises(ModelReplaced):                     # made for the model the page showed, now gone
        worker.call(lambda m: m.name, "A", load_id=old.load_id, timeout=30)
    assert worker.call(lambda m: m.name, "A", load_id=adopted.load_id, timeout=30) == "qwen2"


def test_worker_errors_read_as_plain_sentences(worker):
    """The pages show `user_message(exc)`: the worker's own errors are typed, so they read as written."""
    request = worker.submit(lambda m, _r: m.name, "A", load_id=worker.load_id + 1000)
    with pytest.raises(ModelReplaced) as replaced:
        request.wait(timeout=30)
    assert user_message(replaced.value).endswith("run it again.")
    assert not user_message(RequestCancelled("Cancelled.")).startswith("Unexpected")
    assert user_message(NoModelLoaded()) == "No model is loaded."


# ---------------------------------------------------------------- answers decoded together (issue 17)
LONG = GenerateOptions(max_new_tokens=60, min_new_tokens=60)     # EOS cannot end it early
PROMPTS = ["Tell me a story", "Hi", "A much longer prompt that needs left padding in a batch", "Why is the sky blue?"]


def _read(stream: WorkerStream, out: dict, key) -> None:
    try:
        text = "".join(stream)
        out[key] = (text, time.perf_counter())
    except Exception as exc:  # noqa: BLE001 - the assertion below shows it
        out[key] = exc


def test_answers_of_several_sessions_are_decoded_together_and_each_equals_its_answer_alone(worker, tiny):
    options = GenerateOptions(max_new_tokens=12)
    streams = [WorkerStream(worker, conversation(p), options, f"S{i}") for i, p in enumerate(PROMPTS)]
    out: dict = {}
    threads = [threading.Thread(target=_read, args=(s, out, i)) for i, s in enumerate(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    alone = [generate(tiny, conversation(p), options) for p in PROMPTS]
    for i, stream in enumerate(streams):
        assert out[i][0] == stream.result.text == alone[i].text
        assert stream.result.sequence_ids == alone[i].sequence_ids       # token for token
    assert max(s.result.shared_with for s in streams) == len(PROMPTS) - 1
    first_tokens = [s.first_token_at for s in streams]
    assert max(first_tokens) < min(t for _text, t in out.values())    # every answer began before any ended
    assert _wait_idle(worker)


def test_a_new_answer_joins_the_running_batch_and_does_not_wait_for_it(worker, tiny):
    long = WorkerStream(worker, conversation(PROMPTS[0]), LONG, "A")
    chunks = iter(long)
    next(chunks)                                        # A is decoding
    short = WorkerStream(worker, conversation(PROMPTS[1]), GenerateOptions(max_new_tokens=4), "B")
    text = "".join(short)
    assert not long.request.future.done()               # B ended while A was still decoding
    assert short.result.shared_with >= 1
    rest = "".join(chunks)
    assert text == generate(tiny, conversation(PROMPTS[1]), GenerateOptions(max_new_tokens=4)).text
    assert long.result.new_tokens == 60 and long.result.sequence_ids == generate(tiny, conversation(PROMPTS[0]),
                                                                                   LONG).sequence_ids
    assert rest


def test_stop_cancels_only_its_own_row(worker, tiny):
    a = WorkerStream(worker, conversation(PROMPTS[0]), LONG, "A")
    b = WorkerStream(worker, conversation(PROMPTS[2]), LONG, "B")
    out: dict = {}
    reader = threading.Thread(target=_read, args=(a, out, "a"))
    reader.start()
    chunks_b = iter(b)
    next(chunks_b)
    b.cancel()
    list(chunks_b)
    reader.join(60)
    assert b.result.stopped and b.result.new_tokens < 60
    assert not a.result.stopped and a.result.sequence_ids == generate(tiny, conversation(PROMPTS[0]), LONG).sequence_ids
    assert _wait_idle(worker)


def test_a_capture_runs_between_two_decode_steps(worker):
    from explorer.record.capture import capture

    stream = WorkerStream(worker, conversation(PROMPTS[0]), GenerateOptions(max_new_tokens=200, min_new_tokens=200), "A")
    chunks = iter(stream)
    next(chunks)
    tokens = worker.call(lambda m: capture(m.model, m.tokenizer, list(range(5, 12))).num_tokens, "B", timeout=30)
    assert tokens == 7 and not stream.request.future.done()     # the capture did not wait for the answer
    stream.cancel()
    list(chunks)
    assert _wait_idle(worker)


def test_a_load_waits_for_the_batch_and_answers_made_for_the_old_model_end_with_model_replaced(worker, folders, tiny):
    before = worker.load_id
    running = WorkerStream(worker, conversation(PROMPTS[0]), GenerateOptions(max_new_tokens=20, min_new_tokens=20), "A")
    chunks = iter(running)
    next(chunks)
    cfg = LoadConfig(source=str(folders["qwen2"]), precision="fp32")
    load = worker.submit(lambda _m, req: worker.registry.load(cfg, progress=req), "B", kind="load",
                         load_id=None, needs_model=False)
    stale = WorkerStream(worker, conversation(PROMPTS[1]), GenerateOptions(max_new_tokens=4), "C", load_id=before)
    rest = "".join(chunks)
    assert running.result.new_tokens == 20 and rest      # the running answer finished on its own model
    load.wait(timeout=60)
    assert worker.current.name == "qwen2"
    with pytest.raises(ModelReplaced):
        list(stale)


def test_the_queue_position_counts_down_behind_what_runs_alone(worker):
    """Issue 21 item 4: a waiting page's position is read at every poll, not only when a message comes."""
    release, _ = gate(worker)
    holds = [threading.Event(), threading.Event()]
    for i, hold in enumerate(holds):
        worker.submit(lambda _m, _r, h=hold: h.wait(10), f"X{i}", kind="exclusive", load_id=None,
                      needs_model=False)
    stream = WorkerStream(worker, conversation("Hi"), GenerateOptions(max_new_tokens=2), "D")
    seen: list[int] = []

    def on_wait(n: int) -> None:
        seen.append(n)
        {3: release, 2: holds[0], 1: holds[1]}[n].set()

    stream.wait_started(on_wait=on_wait, alive=lambda: True)
    assert seen == [3, 2, 1]
    assert "".join(stream) == stream.result.text


def test_the_page_s_batch_mode_reads_its_answers_together_as_rows_of_the_shared_batch(worker, tiny):
    from explorer.model.worker_stream import gather

    options = GenerateOptions(max_new_tokens=6)
    streams = [WorkerStream(worker, conversation(p), options, "page") for p in PROMPTS[:3]]
    results = gather(streams, alive=lambda: True)
    assert [r.sequence_ids for r in results] == [generate(tiny, conversation(p), options).sequence_ids
                                                 for p in PROMPTS[:3]]
    assert max(r.shared_with for r in results) == 2


def test_gather_keeps_every_stream_alive_while_it_waits_on_one_of_them(worker, tiny):
    """Slow steps (0.4 s each) against a 1 s abandon limit: a text piece spans several tokens, so the
    stream not being read would look abandoned unless gather marks it read while it waits."""
    from explorer.model.worker_stream import gather

    options = GenerateOptions(max_new_tokens=10, min_new_tokens=10)
    slow = worker.current.model.register_forward_pre_hook(lambda *_: time.sleep(0.4))
    try:
        streams = [WorkerStream(worker, conversation(p), options, "page", abandon_after_s=1.0) for p in PROMPTS[:2]]
        results = gather(streams, alive=lambda: True)
    finally:
        slow.remove()
    assert [r.new_tokens for r in results] == [10, 10] and not any(r.stopped for r in results)
    assert [r.sequence_ids for r in results] == [generate(tiny, conversation(p), options).sequence_ids
                                                 for p in PROMPTS[:2]]


def test_captures_of_sessions_waiting_at_once_share_one_forward_and_each_equals_its_capture_alone(worker):
    from explorer.record.capture import CaptureOptions, capture
    from explorer.record.capture_batch import submit_capture

    prompts = {s: list(range(5, 5 + n)) for s, n in (("A", 7), ("B", 12), ("C", 4))}
    forwards: list[tuple[int, ...]] = []
    model = worker.current.model
    handle = model.register_forward_pre_hook(lambda _m, _a, kw: forwards.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    try:
        release, _ = gate(worker)
        requests = {s: submit_capture(worker, p, CaptureOptions(), s) for s, p in prompts.items()}
        other = submit_capture(worker, list(range(5, 10)), CaptureOptions(parts=frozenset({"residual"})), "D")
        second = submit_capture(worker, list(range(5, 9)), CaptureOptions(), "A")   # behind A's first: not shared
        release.set()
        caps = {s: r.wait(timeout=30) for s, r in requests.items()}
        other.wait(timeout=30), second.wait(timeout=30)
    finally:
        handle.remove()
    assert [r.ran_with for r in requests.values()] == [3, 3, 3]
    assert other.ran_with == 1 and second.ran_with == 1          # other options; a session's own order kept
    assert (3, 12) in forwards and len(forwards) == 3
    for s, cap in caps.items():
        alone = capture(model, worker.current.tokenizer, prompts[s], CaptureOptions())
        assert cap.token_ids.tolist() == prompts[s]
        torch.testing.assert_close(cap.residual, alone.residual, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cap.last_logits, alone.last_logits, atol=1e-5, rtol=1e-5)
    assert _wait_idle(worker)


def test_a_cancelled_capture_leaves_the_shared_forward_and_a_failed_shared_run_is_retried_alone(worker):
    from explorer.model.worker_request import Shareable

    release, _ = gate(worker)
    kept = [worker.submit(lambda _l, _r, i=i: f"alone {i}", s, shared=Shareable("k", i, lambda _l, items: 1 / 0))
            for i, s in enumerate(("A", "B", "C"))]
    kept[1].cancel()
    release.set()
    assert kept[0].wait(timeout=10) == "alone 0" and kept[2].wait(timeout=10) == "alone 2"
    assert kept[0].ran_with == kept[2].ran_with == 2
    with pytest.raises(RequestCancelled):
        kept[1].wait(timeout=10)
    assert _wait_idle(worker)
