"""The architecture page in Chromium: the module hierarchy is really drawn, and a preset opens from its config."""
import pytest

from tests.browser.conftest import click_until_shown, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DRAWN_TRACES = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .flatMap(p => (p._fullData || []).map(t => t.type))"""


def test_architecture_page_draws_the_module_hierarchy(app_url, page):
    page.goto(f"{app_url}/architecture")
    page.get_by_role("heading", name="Architecture").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.wait_for_function(f"() => ({DRAWN_TRACES})().includes('icicle')", timeout=60_000)
    # plotly drew the blocks (one SVG path per visible module), not only received the spec
    blocks = page.locator(".js-plotly-plot g.iciclelayer path.surface")
    assert blocks.count() > 50
    assert page.get_by_text("Decoder layers").first.is_visible()


def test_a_preset_opens_from_its_config_alone(app_url, page):
    page.goto(f"{app_url}/architecture")
    wait_idle(page)
    page.get_by_test_id("stSelectbox").filter(has_text="Model").first.click()
    page.get_by_role("option", name="Llama 3.1 8B Instruct — config only").click()
    page.get_by_text("8.03 B").first.wait_for(timeout=60_000)
    wait_idle(page)
    page.wait_for_function(f"() => ({DRAWN_TRACES})().includes('icicle')", timeout=60_000)
    assert page.locator(".js-plotly-plot g.iciclelayer path.surface").count() > 100


# null until plotly has drawn the data-flow figure (the element exists before its traces do)
POINT_OF = """label => { const gd = document.querySelectorAll('.js-plotly-plot')[1];
    const t = gd && gd._fullData && gd._fullData[2];
    if (!t || !t.text || !gd._fullLayout.xaxis) return null;
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    const i = t.text.findIndex(s => s.startsWith(label));
    if (i < 0) return null;
    return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])]; }"""


def test_clicking_a_folded_block_unfolds_it_and_shows_its_details(app_url, page):
    page.goto(f"{app_url}/architecture")
    wait_idle(page)
    page.get_by_role("tab", name="Data flow").click()
    wait_idle(page)

    def click_layer_1() -> None:      # where the marker is now: plotly may still move the figure
        x, y = page.wait_for_function(POINT_OF, arg="layers 1", timeout=60_000).json_value()
        page.mouse.click(x, y)

    click_until_shown(page, click_layer_1, page.get_by_text("Data flow: 30 decoder layers, layer 1 unfolded"))
    wait_idle(page)
    heading = page.locator("strong", has_text="model.layers.1").first  # the details panel's title
    heading.wait_for(timeout=30_000)
    assert "One decoder layer" in heading.locator("xpath=..").inner_text()
