"""The compare page in Chromium: the embedded model in two precisions, side by side, with drift charts drawn.

fp32 and bf16 rather than the default NF4: they load in about a second each on a CPU, and NF4's
drift is proven on the embedded model in tests/test_drift.py."""
import pytest

from tests.browser.conftest import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DRAWN_TRACES = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .flatMap(p => (p._fullData || []).map(t => t.type))"""


def test_compare_page_runs_two_precisions_and_draws_the_drift(app_url, page):
    page.goto(f"{app_url}/compare")
    page.get_by_role("heading", name="Compare models and precisions").wait_for(timeout=120_000)
    wait_idle(page)
    page.get_by_role("button", name="Remove nf4").click()
    wait_idle(page)
    page.get_by_role("combobox", name="Precisions").click()
    page.get_by_role("option", name="fp32").click()
    page.keyboard.press("Escape")
    wait_idle(page)
    page.get_by_label("Prompts, one per line").fill("What is the capital of France?")
    page.get_by_label("New tokens").fill("4")
    page.get_by_label("New tokens").press("Enter")
    wait_idle(page)
    page.get_by_text("Load the chat model again afterwards").click()   # keep the run short
    wait_idle(page)
    page.get_by_role("button", name="Run comparison").click()
    page.get_by_text("Compared 2 of 2 runs").wait_for(timeout=300_000)
    wait_idle(page, 300_000)
    # speed, drift, per layer, per position, per head; plotly mounts a moment after the script ends
    page.wait_for_function("() => document.querySelectorAll(\"[data-testid='stPlotlyChart']\").length === 5",
                           timeout=60_000)
    charts = page.get_by_test_id("stPlotlyChart")
    for i in range(charts.count()):     # charts below the fold may draw only once scrolled to
        charts.nth(i).scroll_into_view_if_needed()
    page.wait_for_function(f"""() => {{ const t = ({DRAWN_TRACES})();
        return t.includes('heatmap') && t.includes('scatter') && t.filter(x => x === 'bar').length >= 6; }}""",
                           timeout=60_000)
    assert page.get_by_text("Quality drift: what quantization changes inside").is_visible()
    assert page.get_by_role("button", name="Download report (.html)").is_visible()
