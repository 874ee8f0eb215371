"""The internals page in Chromium, one flow: load → hostile prompt → layer, head, tile and token
switches → every view → the capture follows a chat turn → download, reopen without the model.

One flow rather than many tests: the server and the model are shared, and each capture costs seconds.
(A capture over the memory budget is checked with the embedded model in tests/pages/test_page_internals.py.)
Screenshots of every view are kept in tests/artifacts/internals_*.png.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ARTIFACTS, open_with_model, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'

PAINTED = """(title) => {
  for (const chart of document.querySelectorAll('.stPlotlyChart')) {
    const t = chart.querySelector('.gtitle');
    if (t && t.textContent.startsWith(title) && chart.querySelector('g.hm image, g.im image')) return true;
  }
  return false;
}"""


def heatmap_painted(page, title: str, timeout: float = 120_000) -> None:
    """Wait until a heatmap whose title starts with `title` has been drawn (its image exists)."""
    page.wait_for_function(PAINTED, arg=title, timeout=timeout)


TITLES_SHOWN = """(wanted) => {
  const shown = Array.from(document.querySelectorAll('.stPlotlyChart .gtitle')).map(t => t.textContent);
  return wanted.every(w => shown.some(t => t.startsWith(w)));
}"""


def wait_for_titles(page, wanted: list[str], timeout: float = 120_000) -> None:
    """Wait until a figure titled with each prefix in `wanted` is drawn (a rerun may not have started yet)."""
    page.wait_for_function(TITLES_SHOWN, arg=wanted, timeout=timeout)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"internals_{name}.png"))


def click_point(page, chart_key: str, index: int) -> None:
    """Click where a Plotly point is drawn: Plotly hit-tests on its drag layer, not on the point."""
    point = page.locator(f".st-key-{chart_key} .stPlotlyChart path.point").nth(index)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


OUTLINE_HOLDS = """([chartKey, index]) => {
  const chart = document.querySelector(`.st-key-${chartKey} .stPlotlyChart`);
  const box = chart.getBoundingClientRect(), css = getComputedStyle(chart, '::after');
  if (css.content === 'none' || css.display === 'none') return false;
  const left = box.left + parseFloat(css.left), top = box.top + parseFloat(css.top);
  const p = chart.querySelectorAll('path.point')[index].getBoundingClientRect();
  const x = p.left + p.width / 2, y = p.top + p.height / 2;
  return left < x && x < left + parseFloat(css.width) && top < y && y < top + parseFloat(css.height);
}"""


def outline_holds_point(page, index: int, chart_key: str = "internals_fig_overview") -> bool:
    """Whether the selection outline drawn over the overview (CSS) surrounds the index-th click point."""
    return page.evaluate(OUTLINE_HOLDS, [chart_key, index])


def capture_prompt(page, text: str) -> None:
    page.get_by_label("Or capture a prompt without generating").fill(text)
    page.get_by_role("button", name="Capture this prompt").click()
    page.wait_for_timeout(300)
    wait_idle(page)


def test_internals_views_follow_prompts_chat_and_clicks(app_url, page, tmp_path):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.set_viewport_size({"width": 1600, "height": 2600})   # every view fits: screenshots show all of it
    open_with_model(page, app_url)                             # app.py first: it registers the navigation

    # load → prompt with HTML/JS in it → the heatmap is painted, the markup only shown as text
    capture_prompt(page, HOSTILE + " The capital of France is")
    heatmap_painted(page, "Layer 15 · head 0 (KV head 0)")
    assert page.evaluate("window.__pwned") is None and dialogs == []
    assert page.locator("img[src='x']").count() == 0 and page.locator(".stMain script").count() == 0
    strip = "".join(page.locator(".st-key-internals_strip text").all_text_contents())
    assert "<img␣src=x␣onerror=" in strip and "<script>" in strip or "script" in strip   # shown as text
    ticks = " ".join(page.locator(".st-key-internals_fig_attention_map .ytick text").all_text_contents())
    assert "0 <" in ticks
    shot(page, "attention")

    # layer by keyboard on the slider, head from the select box
    page.locator(".st-key-internals_layer input[type='range']").focus()
    page.keyboard.press("ArrowRight")
    heatmap_painted(page, "Layer 16 · head 0")
    wait_idle(page)
    gqa = page.locator(".st-key-internals_fig_gqa .js-plotly-plot")
    gqa.evaluate("gd => { gd.__kept = true; }")
    page.locator(".st-key-internals_head").click()
    page.get_by_role("option", name="head 4 · KV 1").click()
    heatmap_painted(page, "Layer 16 · head 4 (KV head 1)")
    wait_idle(page)
    assert gqa.evaluate("gd => gd.__kept === true")                      # a head switch moves its box only

    # a tile of the all-heads overview opens its head (index = layer × 9 + head)
    click_point(page, "internals_fig_overview", 20 * 9 + 5)
    heatmap_painted(page, "Layer 20 · head 5 (KV head 1)")
    wait_idle(page)
    assert outline_holds_point(page, 20 * 9 + 5) and not outline_holds_point(page, 20 * 9 + 4)

    # a layer switch moves the outline, and the overview stays drawn: it is not remounted
    page.locator(".st-key-internals_fig_overview .js-plotly-plot").evaluate("gd => { gd.__kept = true; }")
    page.locator(".st-key-internals_layer input[type='range']").focus()
    page.keyboard.press("ArrowLeft")
    heatmap_painted(page, "Layer 19 · head 5")
    wait_idle(page)
    assert page.locator(".st-key-internals_fig_overview .js-plotly-plot").evaluate("gd => gd.__kept === true")
    assert outline_holds_point(page, 19 * 9 + 5) and not outline_holds_point(page, 20 * 9 + 5)
    shot(page, "overview_outline")

    # token focus: click a token in the strip
    bar = page.locator(".st-key-internals_strip .stPlotlyChart g.point path").nth(5)
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    heatmap_painted(page, "Attention from token 5 ")
    wait_idle(page)
    for param in ("layer=19", "head=5", "token=5"):                # the view is in the URL
        assert re.search(rf"[?&]{param}(&|$)", page.url), (param, page.url)

    # head summaries click through to a head
    page.get_by_role("radio", name="Head summaries").click()
    wait_idle(page)
    heatmap_painted(page, "Entropy (nats)")
    shot(page, "head_summaries")
    click_point(page, "internals_fig_summary_first_token", 3 * 9 + 2)
    heatmap_painted(page, "Layer 3 · head 2 (KV head 0)")
    wait_idle(page)

    # every other view renders
    expected = {"Residual & norms": ["Residual norm after each layer", "What each layer adds",
                                     "Norm modules across layers", "Learned gain"],
                "Embeddings": ["Input embeddings", "Hidden states after layer 3"],
                "Logit lens": ["Logit lens: top next-token guess", "Final prediction at position 5"],
                "Guided tour": [], "Glossary": []}
    for view, wanted in expected.items():
        page.get_by_role("radio", name=view, exact=True).click()
        wait_for_titles(page, wanted)
        wait_idle(page)
        if view == "Guided tour":
            page.get_by_text("1 · Tokens").wait_for()
            for step in (2, 3):
                # wait for each step to show: a second click during the first one's rerun can be lost
                page.get_by_role("button", name="Next →").click()
                page.get_by_text(f"Step {step} of ").wait_for()
                wait_idle(page)
            page.get_by_text("3 · The residual stream").wait_for()
            heatmap_painted(page, "Residual norm after each layer")
        if view == "Glossary":
            page.get_by_text("Residual stream", exact=False).first.wait_for()
        shot(page, view.split()[0].lower())
    page.get_by_role("radio", name="Attention", exact=True).click()
    wait_idle(page)

    # the capture follows the conversation: a chat turn (3 new tokens) is captured, answer included
    before = page.get_by_text(re.compile(r"· \d+ tokens ·")).first.inner_text()
    page.get_by_text("Generation settings").click()
    page.locator(".st-key-internals_max_new input[type='range']").focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_idle(page)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("Name one fruit.")
    box.press("Enter")
    page.get_by_text("from the chat turn").wait_for(timeout=180_000)
    wait_idle(page)
    heatmap_painted(page, "Layer 3 · head 2")
    after = page.get_by_text(re.compile(r"· \d+ tokens ·")).first.inner_text()
    assert after != before
    assert "fruit" in "".join(page.locator(".st-key-internals_strip text").all_text_contents())
    shot(page, "after_chat")

    # download the capture file, then open it again without running the model
    page.get_by_text("Download and share").click()
    with page.expect_download(timeout=120_000) as dl:
        page.get_by_role("button", name="Capture file (.safetensors)").click()
    saved = tmp_path / "capture.safetensors"
    dl.value.save_as(saved)
    assert saved.stat().st_size > 10_000
    page.locator(".st-key-internals_upload input[type='file']").set_input_files(str(saved))
    page.get_by_text("from the file capture.safetensors").wait_for(timeout=60_000)
    wait_idle(page)
    heatmap_painted(page, "Layer")

    assert dialogs == [] and page.evaluate("window.__pwned") is None
