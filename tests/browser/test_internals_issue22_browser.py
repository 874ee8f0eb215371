"""The Internals page in Chromium, for what issue 22 and issue 20 item 4 found: a cleared chat leaves
no capture and no URL state; a click on the attribution chart opens that head's attention map; on a
495-token prompt the map and its layer slider are on screen together at 1600×1000 and 1280×800; a
text file is captured and the strip pages through it; a file that is not UTF-8 gets one sentence.

Screenshots: tests/artifacts/i22_*.png, every view at both window sizes (look at them).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from explorer.views.figures.attention import EXACT_CELLS
from tests.browser.conftest import ARTIFACTS, open_with_model, wait_idle
from tests.browser.test_internals_browser import capture_prompt, click_point

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = [(1600, 1000), (1280, 800)]
VIEWS = ["Attention", "Residual & norms", "Embeddings", "Logit lens", "Attribution", "Guided tour", "Glossary"]


def shot(page, name: str, full: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"i22_{name}.png"), full_page=full)


def params(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def few_new_tokens(page, prefix: str) -> None:
    """Generation settings: 4 new tokens (the CPU is shared)."""
    page.get_by_text("Generation settings").first.click()
    slider = page.locator(f".st-key-{prefix}_max_new input[type='range']")
    slider.focus()
    slider.press("Home")
    page.wait_for_timeout(300)          # the rerun may start late; meanwhile a stale copy of the slider is drawn
    wait_idle(page)
    expect(slider).to_have_count(1)
    slider.focus()
    for _ in range(3):
        slider.press("ArrowRight")
    wait_idle(page)
    page.get_by_text("Generation settings").first.click()


def ask(page, text: str) -> None:
    box = page.get_by_placeholder("Ask the model…")
    box.fill(text)
    box.press("Enter")
    page.wait_for_timeout(300)
    wait_idle(page, 300_000)


def test_a_cleared_chat_leaves_no_capture_and_no_url_state(app_url, browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})   # fresh: no session yet
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        # the steps: ask on the chat page, clear it there, then open Internals
        open_with_model(page, app_url, "/")
        few_new_tokens(page, "chat")
        ask(page, "What is the capital of France?")
        page.get_by_role("button", name="Clear chat", exact=True).click()
        wait_idle(page)
        page.get_by_role("link", name="Internals").first.click()
        wait_idle(page)
        page.get_by_text("Chat with the model on the left").wait_for()
        assert page.get_by_text("from the chat turn").count() == 0
        assert "prompt" not in params(page) and "layer" not in params(page)
        shot(page, "cleared_on_chat_page")

        # on Internals itself: a turn is captured and named in the URL, then Clear chat drops both
        ask(page, "What is the capital of France?")
        page.get_by_text("from the chat turn").first.wait_for(timeout=300_000)
        wait_idle(page)
        assert "prompt" in params(page)
        page.get_by_role("button", name="Clear chat", exact=True).click()
        wait_idle(page)
        page.get_by_text("Chat with the model on the left").wait_for()
        assert page.get_by_text("from the chat turn").count() == 0
        assert not {"prompt", "layer", "head", "token", "model"} & set(params(page))
        shot(page, "cleared_on_internals")
    finally:
        context.close()


def test_a_click_on_the_attribution_chart_opens_that_heads_map(app_url, page):
    open_with_model(page, app_url)
    capture_prompt(page, "The capital of France is")
    page.get_by_role("radio", name="Attribution", exact=True).click()
    wait_idle(page)
    chart = page.locator(".st-key-internals_fig_attribution")
    chart.wait_for()
    layer, head = 20, 5                                  # the point of (layer, head) is layer * 9 + head
    click_point(page, "internals_fig_attribution", layer * 9 + head)
    page.wait_for_timeout(300)
    wait_idle(page)
    page.wait_for_function("([l, h]) => location.search.includes(`layer=${l}&head=${h}`)", arg=[layer, head])
    got = params(page)
    assert got.get("layer") == [str(layer)] and got.get("head") == [str(head)], got
    assert "view" not in got                             # the attention view (the default) is open
    page.locator(".st-key-internals_fig_attention_map").wait_for()
    assert page.locator(".st-key-internals_fig_attention_map .gtitle").first.text_content().startswith(
        f"Layer {layer} · head {head}")
    shot(page, "attribution_click_opened_map")


def _inside(box: dict, height: int) -> bool:
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height + 1


def test_a_long_prompts_map_and_its_controls_fit_one_window_at_both_sizes(app_url, page):
    open_with_model(page, app_url)
    capture_prompt(page, " ".join(f"word{i}" for i in range(155)))   # ~495 tokens
    picture = page.locator(".st-key-internals_html_attention_map")
    picture.wait_for()
    assert int(picture.locator(".attention-map-image").get_attribute("data-tokens")) > 400
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(500)
        picture.evaluate("el => el.scrollIntoView({block: 'end'})")
        page.wait_for_timeout(300)
        slider = page.locator(".st-key-internals_layer").bounding_box()
        head = page.locator(".st-key-internals_head").bounding_box()
        shown = picture.bounding_box()
        shot(page, f"long_map_{width}x{height}")
        assert _inside(shown, height), (width, shown)
        assert _inside(slider, height) and _inside(head, height), (width, slider, head)
        assert slider["y"] + slider["height"] <= shown["y"]              # above the map, not over it
        # the view switcher, the strip and every view at this size
        for view in VIEWS:
            page.get_by_role("radio", name=view, exact=True).click()
            page.wait_for_timeout(300)
            wait_idle(page, 300_000)
            name = view.split()[0].lower()
            for part in (0, 1):               # the views column, its first two windows' worth
                page.evaluate("(y) => document.querySelector('[data-testid=stMain]').scrollTo(0, y)",
                              part * (height - 120))
                page.wait_for_timeout(200)
                shot(page, f"view_{name}_{width}x{height}_{part}")
        page.get_by_role("radio", name="Attention", exact=True).click()
        wait_idle(page)


def test_a_text_file_is_captured_and_the_strip_pages_through_it(app_url, page, tmp_path):
    open_with_model(page, app_url)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    upload = page.locator(".st-key-internals_prompt_file input[type='file']")
    upload.set_input_files(str(bad))
    page.get_by_text("latin1.txt is not UTF-8 text").wait_for(timeout=60_000)
    wait_idle(page)
    doc = tmp_path / "document.txt"
    doc.write_text(" ".join(f"Sentence {i} says that item{i % 31} sits near item{i % 17}." for i in range(60)))
    upload.set_input_files(str(doc))
    page.get_by_text("from the text file document.txt").wait_for(timeout=300_000)
    wait_idle(page)
    strip_title = page.locator(".st-key-internals_strip .gtitle").first
    first = strip_title.text_content()
    assert first.startswith("Tokens ") and " of " in first
    page.get_by_text("Page ", exact=False).first.wait_for()
    prev = page.get_by_role("button", name="◀", exact=True)
    assert prev.evaluate("b => b.scrollWidth <= b.clientWidth + 1")          # the label is not cut
    prev.click()
    wait_idle(page)
    page.wait_for_function("(before) => { const t = document.querySelector('.st-key-internals_strip .gtitle');"
                           " return t && t.textContent !== before; }", arg=first)
    assert strip_title.text_content() != first
    shot(page, "text_file_paged")


def test_an_87_token_map_labels_rows_by_a_stated_rule_and_can_label_every_row(app_url, page):
    """Issue 22 item 6: at 87 tokens the map labelled every second token without saying so. Now the
    axis title states the rule, labels never overlap at either size, and a toggle labels every row."""
    from tests.browser.test_polish_browser import OVERLAPS

    open_with_model(page, app_url)
    capture_prompt(page, " ".join(["the cat sat on the mat and looked at the dog"] * 8))   # 88 tokens
    chart = page.locator(".st-key-internals_fig_attention_map")
    chart.locator(".gtitle").first.wait_for()
    rows = int(chart.locator(".js-plotly-plot").evaluate("gd => gd.layout.meta.rows"))
    assert 80 <= rows <= EXACT_CELLS                     # a Plotly heatmap, not the picture
    for every in (False, True):
        if every:
            page.get_by_text("Label every row", exact=False).click()
            page.wait_for_timeout(300)
            wait_idle(page)
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(800)
            chart.evaluate("el => el.scrollIntoView({block: 'center'})")
            page.wait_for_timeout(500)
            title = chart.locator(".g-ytitle text").first.text_content()
            labelled = chart.locator(".ytick text").count()
            if every:
                assert labelled == rows and title == "query token", (labelled, title)
            else:
                assert labelled < rows and "labelled, hover names each" in title, (labelled, title)
            found = page.evaluate(OVERLAPS)                      # every chart on the page
            assert found == [], (width, every, found[:6])
            shot(page, f"map87_{'every' if every else 'fits'}_{width}x{height}")
