"""The Intervene view in Chromium: capture a prompt, turn the attribution's top heads off and see
the answer's probability change beside the plain run; then a small residual patching between two
prompts, with its heatmap. Then from a chat turn: "Ablate this head" on a routes edge opens the
view with that head off, the chat answers again with it off beside the plain answer, and a
capture under it names it in its caption, its file and the URL. Screenshots in tests/artifacts/."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ARTIFACTS, click_until_shown, open_with_model, wait_idle
from tests.browser.test_internals_browser import capture_prompt, click_point, heatmap_painted, shot, wait_for_titles

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_ablate_heads_and_patch_two_prompts(app_url, page):
    page.set_viewport_size({"width": 1600, "height": 3000})
    open_with_model(page, app_url)
    capture_prompt(page, "The capital of France is")
    heatmap_painted(page, "Layer", timeout=400_000)       # a shared 2-core machine can be slow
    page.get_by_role("radio", name="Intervene", exact=True).click()
    run = page.get_by_role("button", name="Run with these interventions")
    run.wait_for(timeout=120_000)
    wait_idle(page)
    run.click()
    plain = page.locator('[data-testid="stMetric"]', has_text="plain").first
    changed = page.locator('[data-testid="stMetric"]', has_text="with interventions").first
    changed.wait_for(timeout=180_000)
    wait_idle(page)
    before = float(re.findall(r"(\d+(?:\.\d+)?)%", plain.inner_text())[0])
    after = float(re.findall(r"(\d+(?:\.\d+)?)%", changed.inner_text())[0])
    assert after < before, (plain.inner_text(), changed.inner_text())
    page.get_by_text("Total, direct and indirect effect", exact=False).first.wait_for(timeout=60_000)
    assert "iv=" in page.url
    shot(page, "intervene")
    wait_idle(page)
    clean = page.get_by_label("Clean prompt")   # a click while the URL's rerun redraws the panel can be lost, or undone
    click_until_shown(page, page.get_by_text("Activation patching: which layer", exact=False).click, clean,
                      tries=4, each_ms=20_000, last_ms=60_000)
    page.get_by_label("Clean prompt").fill("The capital of France is")
    page.get_by_label("Clean prompt").press("Enter")
    wait_idle(page)
    page.get_by_label("Corrupted prompt (same number of tokens)").fill("The capital of Italy is")
    page.get_by_label("Corrupted prompt (same number of tokens)").press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Run patching").click()
    wait_for_titles(page, ["Residual patching"], timeout=300_000)
    wait_idle(page)
    page.locator(".stPlotlyChart .gtitle", has_text="Residual patching").first.wait_for(state="visible")
    page.locator(".stPlotlyChart .gtitle", has_text="Residual patching").first.scroll_into_view_if_needed()
    shot(page, "intervene_patching")


def test_ablate_a_head_from_the_routes_then_answer_and_capture_with_it_off(app_url, page, tmp_path):
    page.set_viewport_size({"width": 1600, "height": 2600})
    open_with_model(page, app_url)
    box = page.get_by_placeholder("Ask the model…")
    box.fill("What is the capital of France?")
    box.press("Enter")
    page.wait_for_timeout(300)
    wait_idle(page, 300_000)
    plain = page.locator('[data-testid="stChatMessage"]').last.inner_text().replace("smart_toy", "")   # its avatar icon
    heatmap_painted(page, "Layer", timeout=400_000)                     # the turn was captured

    page.get_by_role("radio", name="Attribution", exact=True).click()
    wait_for_titles(page, ["Information-flow routes into position", "Direct contribution to the logit"], timeout=300_000)
    wait_idle(page)
    carried = page.get_by_text(re.compile(r"^Heads that carry it: head")).first   # not the explanation's words
    for index in range(60):      # the first attention edge's marker that a click reaches (nodes may cover some)
        click_point(page, "internals_fig_routes", index)
        page.wait_for_timeout(300)
        wait_idle(page)
        if carried.count():
            break
    assert carried.count(), "no attention edge among the routes graph's first markers"
    ablate = page.get_by_role("button", name=re.compile(r"Ablate this head \(\d+\.\d+\)")).first   # the edge's first head
    assert page.get_by_role("button", name=re.compile(r"Ablate this head")).count() >= 2      # and the selected head's
    head = re.search(r"\((\d+\.\d+)\)", ablate.inner_text()).group(1)
    shot(page, "ablate_from_routes")
    ablate.click()

    changed = page.locator('[data-testid="stMetric"]', has_text="with interventions").first
    changed.wait_for(timeout=180_000)                                   # Intervene opened and ran it
    wait_idle(page)
    assert page.get_by_role("radio", name="Intervene", exact=True).is_checked()
    assert f"iv=h{head}" in page.url, page.url
    shot(page, "ablated_from_routes")

    again = page.get_by_role("button", name=f"Answer again with head {head} off")
    again.wait_for(timeout=120_000)                                     # the chat panel offers it
    again.click()
    pair = page.locator(".st-key-chat_ablation_pair")
    pair.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    text = pair.inner_text()
    assert f"With head {head} off" in text and "Plain answer" in text, text
    assert " ".join(plain.split())[:40] in " ".join(text.split()), (plain, text)
    pair.scroll_into_view_if_needed()
    shot(page, "chat_with_head_off")

    page.get_by_role("button", name="Capture under these interventions").click()
    note = f"taken with interventions: h{head}"
    page.get_by_text(note, exact=False).first.wait_for(timeout=300_000)  # the caption says which applied
    wait_idle(page)
    assert f"iv=h{head}" in page.url and f"ivcap=h{head}" in page.url, page.url   # and its URL
    page.get_by_text("Download and share", exact=False).first.click()
    with page.expect_download(timeout=300_000) as dl:
        page.get_by_role("button", name="Capture file (.safetensors)").click()
    path = tmp_path / "capture.safetensors"
    dl.value.save_as(str(path))
    from explorer.record.capture_file import open_capture
    assert note in open_capture(path).notes                            # and its file
    shot(page, "captured_with_head_off")

    other = page.context.browser.new_context(viewport={"width": 1600, "height": 1600}).new_page()   # the link, elsewhere
    try:
        other.goto(page.url)
        other.get_by_text(f"Taken with interventions: h{head}", exact=False).first.wait_for(timeout=300_000)
        wait_idle(other)
        assert other.get_by_text("from the shared link with", exact=False).count()
        other.screenshot(path=str(ARTIFACTS / "internals_link_captured_with_head_off.png"))
    finally:
        other.context.close()
