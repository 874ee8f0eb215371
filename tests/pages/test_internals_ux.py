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
from tests.pages.internals_page import page_with
from tests.tiny_models import tiny_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "internals.py")
T = 24


@pytest.fixture(scope="module")
def tiny_capture() -> Capture:
    return capture(tiny_model("llama"), None, list(range(5, 5 + T)))


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
    assert [(b.label, b.disabled) for b in (at.button(key="internals_clear"), at.button(key="internals_stop"))] == \
        [("Clear chat", False), ("Stop", False)]                    # both still offered under the turns


def test_a_chat_turn_capture_marks_where_the_answer_begins(no_model, tiny_capture):
    at = page_with(tiny_capture, answer_start=20)
    titles = [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]
    strip = next(t for t in titles if "answer 20–23" in t)
    assert "prompt 0–19" in strip


def _chat_turn_page(cap: Capture, messages: list[dict]) -> AppTest:
    """A page whose capture follows the chat, with the view in the URL, and the given conversation."""
    from pages import _state
    from pages._internals.on_screen import CHAT_TURN, OnScreen

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.ON_SCREEN] = OnScreen(Readout(cap), "x", "raw", CHAT_TURN)
    at.session_state[_state.CHAT_MESSAGES] = messages
    at.session_state[_state.LAST_SEQUENCE_IDS] = list(range(5, 5 + T))
    at.session_state[_state.LINK_READ] = True
    at.query_params.update(model="tiny", prompt="x", src="raw", layer="1", head="0", token="3")
    return at.run()


def test_a_cleared_chat_takes_its_capture_and_the_url_along(no_model, tiny_capture):
    from pages import _state

    kept = _chat_turn_page(tiny_capture, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert kept.session_state[_state.ON_SCREEN] is not None and "chat turn" in kept.caption[0].value
    cleared = _chat_turn_page(tiny_capture, [])
    assert _state.ON_SCREEN not in cleared.session_state
    assert not any(k in cleared.query_params for k in ("model", "prompt", "src", "layer", "head", "token"))
    assert any("Chat with the model on the left" in i.value for i in cleared.info)
    assert not any("chat turn" in c.value for c in cleared.caption)


def test_the_token_strip_pages_through_a_long_prompt_without_moving_the_focus(no_model):
    model = tiny_model("llama")
    model.config.max_position_embeddings = 2048
    long = capture(model, None, [5 + i % 200 for i in range(700)])
    at = page_with(long)

    def strip_title() -> str:
        strip = next(json.loads(el.proto.spec) for el in at.get("plotly_chart")
                     if "click a token" in json.loads(el.proto.spec)["layout"]["title"]["text"])
        return strip["layout"]["title"]["text"]

    assert strip_title().startswith("Tokens 640–699 of 700")          # the focus's page, not 160 tokens around it
    assert at.button(key="internals_strip_next").disabled
    at.button(key="internals_strip_prev").click().run()
    assert strip_title().startswith("Tokens 480–639 of 700")
    assert at.session_state["internals_token"] == 699                  # turning a page keeps the focus
    assert any("the focus (699) is on page 5" in c.value for c in at.caption)
    at.select_slider(key="internals_token").set_value(10).run()        # a jump turns to the focus's page
    assert strip_title().startswith("Tokens 0–159 of 700")
    assert at.button(key="internals_strip_prev").disabled
    assert not at.exception


def test_a_layer_the_capture_dropped_is_a_sentence_not_a_key_error(no_model, tiny_capture):
    from pages import _state
    from pages._internals.on_screen import OnScreen

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state[_state.ON_SCREEN] = OnScreen(Readout(tiny_capture), "x", "text", "test prompt")
    at.session_state[_state.LAYER] = 99
    at.session_state[_state.LINK_READ] = True
    at.run()
    assert not at.exception
    assert any("Layer 99 is not in this capture" in i.value for i in at.info)
