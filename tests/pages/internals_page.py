"""The Internals page opened on a given capture, for AppTests of its views (one helper for all of them)."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.analyse.derived import Derived
from explorer.record.capture import Capture
from explorer.views.readout import Readout

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "internals.py")


def page_with(cap: Capture, view: str = "attention", *, model=None, origin: str = "test prompt",
              prompt: str | None = "x", answer_start: int | None = None, results: Derived | None = None) -> AppTest:
    """The page run once with `cap` on screen at layer 1, head 0, the last token, in `view`;
    `results`: what was derived from it beforehand (a file's, as open_with_results hands them back)."""
    from pages import _state
    from pages._internals.current import Current

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.CURRENT] = Current(Readout(cap, model, results=results), prompt, "text", origin, answer_start=answer_start)
    at.session_state[_state.LAYER] = 1
    at.session_state[_state.HEAD] = 0
    at.session_state[_state.TOKEN] = cap.num_tokens - 1
    at.session_state[_state.LINK_READ] = True
    at.session_state[_state.VIEW] = view
    return at.run()
