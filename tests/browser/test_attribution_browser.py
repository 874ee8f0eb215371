"""The Attribution view in Chromium: capture a prompt, open the view, click an attention edge of the
routes graph and see the attention map of a head that carries it. Screenshots in tests/artifacts/."""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import open_with_model, wait_idle
from tests.browser.test_internals_browser import capture_prompt, click_point, heatmap_painted, shot, wait_for_titles

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_click_an_attention_edge_and_see_its_heads_map(app_url, page):
    page.set_viewport_size({"width": 1600, "height": 2600})
    open_with_model(page, app_url)
    capture_prompt(page, "The capital of France is")
    heatmap_painted(page, "Layer")
    page.get_by_role("radio", name="Attribution", exact=True).click()
    wait_for_titles(page, ["Information-flow routes into position", "Direct contribution to the logit"])
    wait_idle(page)
    shot(page, "attribution")
    click_point(page, "internals_fig_routes", 0)            # the first marker is an attention edge
    page.get_by_text(re.compile(r"^Heads that carry it: head")).wait_for(timeout=120_000)
    wait_idle(page)
    text = page.get_by_text(re.compile(r"Attention edge, layer \d+")).first.inner_text()
    layer = int(re.search(r"layer (\d+)", text).group(1))
    heatmap_painted(page, f"Layer {layer} · head ")
    shot(page, "attribution_edge")
