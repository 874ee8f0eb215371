"""AppTest of Compare across reruns, pages and sessions: inputs kept, Cancel, one comparison at a time."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.compare.lock import COMPARE_LOCK
from explorer.compare.run import CANCELLED

ROOT = Path(__file__).resolve().parents[2]
APP, PAGE = str(ROOT / "app.py"), str(ROOT / "pages" / "compare.py")


@pytest.fixture(autouse=True)
def _no_resident_model(monkeypatch, empty_registry):
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    yield empty_registry
    assert COMPARE_LOCK.holder is None, "a test left the compare lock held"


def long_comparison(at: AppTest, folder: str) -> AppTest:
    """Many prompts on a tiny model: long enough to cancel or collide with, seconds when cancelled."""
    at.multiselect(key="cmp_models").set_value([])
    at.text_input(key="cmp_extra").set_value(folder)
    at.multiselect(key="cmp_precisions").set_value(["fp32", "bf16", "fp16"])
    at.text_area(key="cmp_prompts").set_value("\n".join(f"Prompt number {i}" for i in range(40)))
    at.number_input(key="cmp_max_new").set_value(40)
    at.checkbox(key="cmp_fixed").set_value(True)
    at.checkbox(key="cmp_drift").set_value(False)
    at.checkbox(key="cmp_reload").set_value(False)
    return at.button(key="cmp_run").click().run()


def cancel_and_finish(at: AppTest, after: str | None = None) -> AppTest:
    """Click Cancel (once the job has said `after`, if given) and run until the thread has ended."""
    job = at.session_state["compare_job"]
    deadline = time.time() + 120
    while after is not None and not any(after in line for line in job.lines) and time.time() < deadline:
        time.sleep(0.05)
    at.button(key="cmp_cancel").click().run()
    assert job.cancel.is_set()
    assert job.done.wait(120), "the cancelled comparison did not stop"
    return at.run()


def test_compare_inputs_survive_a_visit_to_another_page():
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp_precisions").set_value(["fp32"])
    at.text_area(key="cmp_prompts").set_value("Why is grass green?")
    at.number_input(key="cmp_max_new").set_value(7)
    at.checkbox(key="cmp_reload").set_value(False).run()
    at.switch_page("pages/chat.py").run()
    assert not at.exception and at.button(key="load_button").label == "Load"
    at.switch_page("pages/compare.py").run()
    assert not at.exception and not at.warning
    assert at.multiselect(key="cmp_precisions").value == ["fp32"]
    assert at.text_area(key="cmp_prompts").value == "Why is grass green?"
    assert at.number_input(key="cmp_max_new").value == 7
    assert at.checkbox(key="cmp_reload").value is False


def test_cancel_stops_a_running_comparison_and_keeps_what_ran(tiny_folder):
    at = long_comparison(AppTest.from_file(PAGE, default_timeout=120).run(), tiny_folder)
    assert not at.exception
    cancel = at.button(key="cmp_cancel")
    assert at.status and cancel.label == "Cancel comparison" and not cancel.disabled
    assert at.button(key="cmp_run").disabled
    cancel_and_finish(at, after="prompt 2 of 40")
    assert not at.exception and "compare_job" not in at.session_state
    assert any("Cancelled: 0 run(s) had finished" in w.value for w in at.warning)
    result = at.session_state["compare_result"]
    assert len(result.runs) == 1 and result.runs[0].error == CANCELLED and 2 <= len(result.runs[0].outputs) < 40
    assert not at.button(key="cmp_run").disabled


def test_a_second_session_is_told_someone_else_is_comparing(tiny_folder):
    first = long_comparison(AppTest.from_file(PAGE, default_timeout=120).run(), tiny_folder)
    second = AppTest.from_file(PAGE, default_timeout=120).run()
    try:
        assert any("Someone else is running a comparison" in i.value for i in second.info)
        second.multiselect(key="cmp_precisions").set_value(["fp32"])
        second.button(key="cmp_run").click().run()
        assert not second.exception
        assert any("Someone else is running a comparison" in w.value for w in second.warning)
        assert "compare_job" not in second.session_state                  # refused, nothing started
    finally:
        cancel_and_finish(first)
    second.button(key="cmp_run").click().run()                            # free again once the first ends
    assert "compare_job" in second.session_state
    cancel_and_finish(second)
