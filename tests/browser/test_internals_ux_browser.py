"""The Internals page in Chromium at 1600×1000, as a new user sees it (issue 12): hidden characters
shown, byte pieces for split characters, the chat column's order and buttons, the prompt/answer
boundary, the tour's buttons, a 142-token map, a 300-token map drawn as a picture and its
full-resolution window, the contributions chart.

Screenshots: tests/artifacts/ux_*.png (look at them).
"""
from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, open_with_model, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RLO, PDF = "\u202e", "\u202c"
TITLES = """(wanted) => Array.from(document.querySelectorAll('.stPlotlyChart .gtitle'))
    .some(t => t.textContent.includes(wanted))"""


def shot(page, name: str, full: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ux_{name}.png"), full_page=full)


def wait_title(page, text: str, timeout: float = 300_000) -> None:
    page.wait_for_function(TITLES, arg=text, timeout=timeout)


def capture_text(page, text: str) -> None:
    page.get_by_label("Or capture a prompt without generating").fill(text)
    page.get_by_role("button", name="Capture this prompt").click()
    page.wait_for_timeout(300)
    wait_idle(page, 300_000)


def test_a_new_user_sees_what_is_really_in_the_text_and_a_readable_page(app_url, page):
    open_with_model(page, app_url)

    # the left column is wide enough for both buttons, uncut
    for name in ("Clear chat", "Stop"):
        button = page.get_by_role("button", name=name, exact=True)
        assert button.evaluate("b => b.scrollWidth <= b.clientWidth + 1"), name
        assert button.inner_text().strip() == name

    # a chat turn: hidden characters shown in the turn, the answer marked in the strip
    page.get_by_text("Generation settings").click()                   # 6 new tokens: the CPU is shared
    slider = page.locator(".st-key-internals_max_new input[type='range']")
    slider.focus()
    slider.press("Home")
    wait_idle(page)
    for _ in range(5):
        slider.press("ArrowRight")
    wait_idle(page)
    page.get_by_text("Generation settings").click()
    box = page.get_by_placeholder("Ask the model…")
    box.fill(f"Say: {RLO}evil.exe{PDF} שלום")
    box.press("Enter")
    wait_title(page, "answer ")
    wait_idle(page, 300_000)
    turns = page.locator(".st-key-internals_turns").inner_text()
    assert "⟨U+202E⟩evil.exe⟨U+202C⟩" in turns and RLO not in turns
    left = page.locator(".st-key-internals_turns").bounding_box()
    stats = page.get_by_text("tokens/s", exact=False).first.bounding_box()
    chat_input = page.get_by_placeholder("Ask the model…").bounding_box()
    assert left["y"] + left["height"] <= stats["y"] + 1 and stats["y"] < chat_input["y"]   # turns, stats, input
    strip = "".join(page.locator(".st-key-internals_strip text").all_text_contents())
    assert "<0xD7>" in strip and "\ufffd" not in strip                # Hebrew split into bytes, shown as such
    shot(page, "chat_turn")

    # a 142-token prompt: the map is tall and its labels do not overlap
    capture_text(page, " ".join(f"word{i}" for i in range(40)))
    chart = page.locator(".st-key-internals_fig_attention_map")
    chart.scroll_into_view_if_needed()
    boxes = [t.bounding_box() for t in chart.locator(".ytick text").all()]
    ys = sorted(b["y"] for b in boxes if b)
    assert len(ys) > 20 and all(b - a >= 10 for a, b in zip(ys, ys[1:]))
    shot(page, "attention_map_long")
    page.locator(".st-key-internals_fig_token_attention").scroll_into_view_if_needed()
    shot(page, "token_attention")

    # a 300-token prompt: the map is a picture with HTML labels; a window brings back hover and zoom
    capture_text(page, " ".join(f"word{i}" for i in range(85)))
    picture = page.locator(".st-key-internals_html_attention_map .attention-map-image")
    picture.scroll_into_view_if_needed()
    assert picture.get_attribute("data-title").startswith("Layer ")
    assert int(picture.get_attribute("data-tokens")) > 160
    assert picture.locator("img").first.evaluate("img => img.complete && img.naturalWidth > 160")
    shot(page, "attention_map_picture")
    image = picture.locator("img").first.bounding_box()
    rows = [b for b in (s.bounding_box() for s in picture.locator(".query-label").all()) if b]
    ys = sorted(b["y"] for b in rows)
    assert len(ys) > 20 and all(b - a >= 10 for a, b in zip(ys, ys[1:]))     # labels do not overlap
    assert all(b["x"] + b["width"] <= image["x"] + 1 for b in rows)         # and sit left of the picture
    columns = [b for b in (s.bounding_box() for s in picture.locator(".key-label").all()) if b]
    assert len(columns) > 10 and all(b["y"] >= image["y"] + image["height"] - 1 for b in columns)   # below it
    assert page.locator(".st-key-internals_fig_attention_map").count() == 0   # no Plotly chart for it
    page.get_by_text("Full-resolution window", exact=True).click()
    wait_idle(page)
    wait_title(page, "full resolution")
    window = page.locator(".st-key-internals_fig_attention_map")
    window.scroll_into_view_if_needed()
    assert window.locator("g.hm image").count() == 1                     # a heatmap trace: hover reads cells
    shot(page, "attention_map_window")
    page.get_by_text("Full-resolution window", exact=True).click()
    # the picture is back before the next click: a click that interrupts a views redraw can make
    # Streamlit 1.67's page fail ("'setIn' cannot be called on an ElementNode", 1 in 10-20 here)
    page.locator(".st-key-internals_html_attention_map .attention-map-image").wait_for()
    page.wait_for_timeout(300)
    wait_idle(page)

    # the tour: Previous is enabled as soon as step 2 shows
    page.get_by_role("radio", name="Guided tour", exact=True).click()
    wait_idle(page)
    prev = page.get_by_role("button", name="← Previous")
    assert prev.is_disabled()
    page.get_by_role("button", name="Next →").click()
    wait_idle(page)
    page.get_by_text("2 · Embeddings").wait_for()
    assert prev.is_enabled()
    shot(page, "tour_step2")

    page.get_by_role("radio", name="Residual & norms", exact=True).click()
    wait_idle(page)
    wait_title(page, "What each layer adds")
    page.locator(".st-key-internals_fig_contributions").scroll_into_view_if_needed()
    shot(page, "contributions")
