"""A shared deep link as the very first request to a fresh server still runs through app.py.

Why its own server: Streamlit treats a folder named pages/ as legacy multipage mode until app.py
has run once in the process. scripts/serve.py switches that off before the server starts; if a
Streamlit upgrade breaks the switch, the first visitor of a shared link gets the page alone (no
navigation, no wide layout, no query parameters honoured). A shared server would have run app.py
already and hide that, so this test starts one nobody has visited.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ARTIFACTS, served_app, wait_idle
from tests.browser.test_internals_browser import capture_prompt, heatmap_painted

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAV_LINKS = ("Load & chat", "Architecture", "Internals", "Compare")


@pytest.fixture
def fresh_app_url(tmp_path):
    with served_app(tmp_path / "server.log") as url:
        yield url


def test_deep_link_as_first_request_renders_through_app_py_with_its_layer(fresh_app_url, browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{fresh_app_url}/internals?layer=3")            # nothing has run app.py before this
        wait_idle(page, 300_000)
        sidebar = page.locator("[data-testid='stSidebar']")
        sidebar.get_by_text("LLM Explorer").wait_for()              # app.py's sidebar header
        for name in NAV_LINKS:                                      # app.py's navigation links
            assert sidebar.locator("[data-testid='stPageLink']").get_by_text(name, exact=True).count() == 1, name
        page.get_by_role("heading", name="Internals").wait_for()
        width = page.locator("[data-testid='stMainBlockContainer']").bounding_box()["width"]
        assert width > 1000, f"app.py's wide layout is not applied (main column {width:.0f}px)"
        page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for(timeout=300_000)
        wait_idle(page, 300_000)
        capture_prompt(page, "The capital of France is")
        heatmap_painted(page, "Layer 3 · head 0")                   # the link's layer, applied to the capture
        assert re.search(r"[?&]layer=3(&|$)", page.url), page.url
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "deep_link_first_request.png"))
    finally:
        context.close()
