"""The Intervene view in Chromium: capture a prompt, turn the attribution's top heads off and see
the answer's probability change beside the plain run; then a small residual patching between two
prompts, with its heatmap. Screenshots in tests/artifacts/."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import wait_idle
from tests.browser.test_internals_browser import capture_prompt, heatmap_painted, shot, wait_for_titles

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_ablate_heads_and_patch_two_prompts(app_url, page):
    page.set_viewport_size({"width": 1600, "height": 3000})
    page.goto(f"{app_url}/")
    page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    page.goto(f"{app_url}/internals")
    wait_idle(page)
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
    page.get_by_text("Activation patching: which layer", exact=False).click()
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
