"""AppTest for what a new user trips over on the Internals page (issue 12): the tour's buttons,
hidden characters shown, the prompt/answer boundary in the token strip, the chat column's order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.record.capture import Capture, capture
from explorer.views.readout import Readout
from explorer.views.teaching import TOUR
from tests.tiny_models import tiny_model

from tests.pages.test_page_internals import no_model  # noqa: E402,F401  (the shared fixture)

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "internals.py")
T = 24


@pytest.fixture(scope="module")
def tiny_capture() -> Capture:
    return capture(tiny_model("llama"), None, list(range(5, 5 + T)))


def page_with(cap: Capture, view: str = "attention", answer_start: int | None = None) -> AppTest:
    from pages import _state
    from pages._internals.current import Current

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.CURRENT] = Current(Readout(cap), "x", "text", "test prompt", answer_start=answer_start)
    at.session_state[_state.LAYER] = 1
    at.session_state[_state.HEAD] = 0
    at.session_state[_state.TOKEN] = cap.num_tokens - 1
    at.session_state[_state.LINK_READ] = True
    at.session_state[_state.VIEW] = view
    return at.run()


def tour_buttons(at: AppTest) -> tuple[bool, bool, str]:
    prev, nxt = at.button(key="internals_tour_prev"), at.button(key="internals_tour_next")
    step = next(h.value for h in at.subheader if " · " in h.value)
    return prev.disabled, nxt.disabled, step


def test_tour_buttons_match_the_step_shown_after_every_click(no_model, tiny_capture):
    at = page_with(tiny_capture, view="tour")
    assert tour_buttons(at) == (True, False, TOUR[0].title)
    for i in range(1, len(TOUR)):
        at.button(key="internals_tour_next").click().run()
        last = i == len(TOUR) - 1
        assert tour_buttons(at) == (False, last, TOUR[i].title), i   # drawn for the step after the click
    for i in range(len(TOUR) - 2, -1, -1):
        at.button(key="internals_tour_prev").click().run()
        assert tour_buttons(at) == (i == 0, False, TOUR[i].title), i
    assert not at.exception


def _walk(node, out: list) -> list:
    """Element types in page order (depth first)."""
    for child in getattr(node, "children", {}).values():
        out.append((child.type, getattr(child, "value", None)))
        _walk(child, out)
    return out


def test_chat_column_reads_turns_then_stats_then_input_with_hidden_characters_shown(no_model, tiny_capture):
    from pages import _state

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.CHAT_MESSAGES] = [{"role": "user", "content": "open \u202eevil.exe\u202c"},
                                              {"role": "assistant", "content": "pay\u200bpal"}]
    at.session_state[_state.LAST_STATS] = dict(ttft=0.5, tps=12.0, new_tokens=3, prompt_tokens=9, stopped=True,
                                               approx=True)
    at.session_state[_state.LINK_READ] = True
    at.run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert "open ⟨U+202E⟩evil.exe⟨U+202C⟩" in texts and "pay⟨U+200B⟩pal" in texts
    order = [kind for kind, value in _walk(at.columns[0], [])
             if kind in ("chat_message", "chat_input") or (kind == "caption" and "tokens/s" in str(value))]
    assert order == ["chat_message", "chat_message", "caption", "chat_input"], order
    stats = next(c.value for c in at.caption if "tokens/s" in c.value)
    assert "stopped" in stats and "≈" in stats                      # a stopped answer still shows its speed
    assert at.button(key="internals_clear") and at.button(key="internals_stop")


def test_a_chat_turn_capture_marks_where_the_answer_begins(no_model, tiny_capture):
    at = page_with(tiny_capture, answer_start=20)
    titles = [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]
    strip = next(t for t in titles if "answer 20–23" in t)
    assert "prompt 0–19" in strip
