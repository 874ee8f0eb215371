"""AppTest for what a new user trips over on the Internals page (issue 12): the tour's buttons,
hidden characters shown, the prompt/answer boundary in the token strip, the chat column's order."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.record.capture import Capture, capture
from explorer.views.readout import Readout
from explorer.views.teaching import TOUR
from tests.tiny_models import tiny_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "internals.py")
T = 24


@pytest.fixture
def no_model(monkeypatch):
    from pages._common import registry

    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    reg = registry()
    before = reg._current
    reg._current = None
    yield
    reg._current = before


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
