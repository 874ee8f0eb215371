"""Every model computation of the Internals page runs on the model worker (issue 17, item 3).

The embedded model is resident; the page captures a prompt through its form and then visits every
view (attention with its head summaries, residual, embeddings, logit lens, attribution with a node's
and an edge's details, every tour step, the glossary) and the capture file a download hands out.
A forward pre-hook on every module in the process (the model's own, and the float32 copy of its
LM head the lens uses on CPU) records the thread of each call; so do the analysis entry points
that run on the capture's tensors (attention maths, head summaries, routes, attribution, the lens
head, the file's writer). All must be the worker's thread. The capture itself is left unchanged.
"""
from __future__ import annotations

import functools
import threading

import pytest
import torch
from streamlit.testing.v1 import AppTest

import explorer.analyse.attention as attention_maths
import explorer.analyse.attention_maps as attention_maps
import explorer.analyse.attention_rows as attention_rows
import explorer.views.exports as exports
import explorer.views.readout as readout_module
from explorer.analyse.lens import LensHead
from explorer.analyse.routes import DEFAULT_THRESHOLD
from explorer.views.figures.routes import EDGE, NODE
from explorer.views.readout import Readout
from explorer.views.teaching import TOUR
from explorer.views.url_state import VIEWS
from tests.capture_snapshot import differences, snapshot
from tests.pages.internals_page import PAGE

pytestmark = pytest.mark.slow


class ThreadLog:
    """(what, thread) of every recorded call, from any thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, threading.Thread]] = []
        self._lock = threading.Lock()

    def add(self, what: str) -> None:
        with self._lock:
            self.calls.append((what, threading.current_thread()))

    def wrap(self, what: str, fn):
        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            self.add(what)
            return fn(*args, **kwargs)
        return recorded

    def off(self, thread: threading.Thread) -> list[tuple[str, str]]:
        return sorted({(what, t.name) for what, t in self.calls if t is not thread})

    def kinds(self) -> set[str]:
        return {what.split(":")[0] for what, _ in self.calls}


@pytest.fixture
def log(monkeypatch):
    calls = ThreadLog()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, _args: calls.add("module:" + type(module).__name__))
    for module in (attention_rows, attention_maths, attention_maps):   # where it lives and every module importing it
        monkeypatch.setattr(module, "layer_rows", calls.wrap("attention maths", module.layer_rows))
    monkeypatch.setattr(attention_maths, "summaries", calls.wrap("head summaries", attention_maths.summaries))
    monkeypatch.setattr(readout_module, "build_routes", calls.wrap("routes", readout_module.build_routes))
    monkeypatch.setattr(readout_module, "direct_logit_attribution",
                        calls.wrap("attribution", readout_module.direct_logit_attribution))
    monkeypatch.setattr(LensHead, "logits", calls.wrap("lens head", LensHead.logits))
    monkeypatch.setattr(exports, "save_with_results", calls.wrap("capture file", exports.save_with_results))
    try:
        yield calls
    finally:
        handle.remove()


def visit(at: AppTest, view: str, **state) -> AppTest:
    for key, value in state.items():
        at.session_state[key] = value
    at.segmented_control(key="internals_view").set_value(view).run()
    assert not at.exception, (view, at.exception)
    return at


def test_every_model_computation_of_the_internals_page_runs_on_the_worker(embedded_resident, log):
    from pages._common import model_worker

    worker = model_worker()
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.text_area(key="internals_prompt").set_value("The capital of France is")
    at.button(key="FormSubmitter:internals_capture_form-Capture this prompt").click().run()
    assert not at.exception and not at.error
    r: Readout = at.session_state["internals_on_screen"].readout
    cap, last = r.capture, r.num_tokens - 1
    captured = snapshot(cap)
    assert log.calls and not log.off(worker.thread), "the capture itself ran off the worker"

    for view in VIEWS:
        visit(at, view)
    visit(at, "attention")
    at.segmented_control(key="internals_w_more").set_value("Head summaries").run()
    at.toggle(key="internals_w_sum_token").set_value(True).run()
    assert not at.exception
    graph = r.routes(last, DEFAULT_THRESHOLD)                                  # memoised by the view: no compute
    edge = next(i for i, e in enumerate(graph.edges) if e.kind == "attention")
    for pick in ((NODE, 0), (NODE, len(graph.nodes) - 1), (EDGE, edge)):
        visit(at, "attribution", internals_routes_pick=(*pick, last, DEFAULT_THRESHOLD))
    for step in range(len(TOUR)):
        visit(at, "tour", internals_tour_step=step)
    visit(at, "lens", internals_token=1)
    # A download's data is made outside the script run (Streamlit calls it on its own thread).
    done: list[bytes] = []
    downloader = threading.Thread(target=lambda: done.append(r.capture_file(include_lens=True)), name="download")
    downloader.start()
    downloader.join(timeout=300)
    assert done and len(done[0]) > 0 and 5 in r.results.lens

    kinds = log.kinds()
    assert {"module", "attention maths", "head summaries", "routes", "attribution", "lens head",
            "capture file"} <= kinds, kinds
    assert log.off(worker.thread) == [], "model computations ran off the model worker"
    assert differences(captured, snapshot(cap)) == []

    # The check can fail: the same lens asked for on this thread, without the worker, is seen.
    log.calls.clear()
    Readout(cap, embedded_resident.model, embedded_resident.tokenizer).lens_window(0, 3, k=2)
    assert ("lens head", threading.current_thread().name) in log.off(worker.thread)
    assert any(what.startswith("module:") for what, _ in log.off(worker.thread))
