"""What can be measured of issue 22's rough edges, in Chromium, on every page at 1600×1000 and
1280×800: no label drawn over another, no button text cut, no chart title under Plotly's toolbar,
no raw "None" in Compare's tables. Screenshots: tests/artifacts/polish_<page>_<width>.png.
"""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.drift import compare_fingerprints, fingerprint
from explorer.compare.report import results_to_json
from explorer.compare.run import CompareConfig, ComparisonResult, RunRecord
from tests.browser.conftest import ARTIFACTS, wait_idle
from tests.tiny_models import tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = ((1600, 1000), (1280, 800))

# Boxes of the SVG texts a reader reads (titles, axis and tick labels, legends, annotations) in each
# chart; pairs that overlap by more than 2 px both ways (a cell's own text inside a heatmap is left out).
# Two labels rotated alike (x ticks at -60°) are compared in their own frame: their upright boxes
# always overlap, the glyphs only when the labels are closer than a line's height across.
OVERLAPS = """() => {
  const sel = '.gtitle, .g-xtitle text, .g-ytitle text, .xtick text, .ytick text, .legendtext, .annotation-text';
  const angle = t => { const m = /rotate\\((-?[\\d.]+)/.exec(t.getAttribute('transform') || ''); return m ? +m[1] : 0; };
  const out = [];
  for (const chart of document.querySelectorAll('.stPlotlyChart')) {
    const texts = Array.from(chart.querySelectorAll(sel)).filter(t => t.textContent.trim()
        && getComputedStyle(t).visibility !== 'hidden' && getComputedStyle(t).opacity !== '0');
    const items = texts.map(t => ({t: t.textContent, r: t.getBoundingClientRect(), a: angle(t), b: t.getBBox()}))
                       .filter(x => x.r.width > 0);
    for (let i = 0; i < items.length; i++) for (let j = i + 1; j < items.length; j++) {
      const p = items[i], q = items[j];
      if (p.a !== 0 && p.a === q.a) {
        const th = p.a * Math.PI / 180, ux = Math.cos(th), uy = Math.sin(th);
        const dx = (q.r.left + q.r.right - p.r.left - p.r.right) / 2, dy = (q.r.top + q.r.bottom - p.r.top - p.r.bottom) / 2;
        const along = Math.abs(dx * ux + dy * uy), across = Math.abs(-dx * uy + dy * ux);
        if (along < (p.b.width + q.b.width) / 2 - 2 && across < 0.75 * Math.min(p.b.height, q.b.height)) out.push(`${p.t} / ${q.t}`);
        continue;
      }
      const w = Math.min(p.r.right, q.r.right) - Math.max(p.r.left, q.r.left);
      const h = Math.min(p.r.bottom, q.r.bottom) - Math.max(p.r.top, q.r.top);
      if (w > 2 && h > 2) out.push(`${p.t} / ${q.t}`);
    }
  }
  return out;
}"""

# A chart title (or a panel title in the top margin) under the toolbar's box.
UNDER_TOOLBAR = """() => {
  const out = [];
  for (const chart of document.querySelectorAll('.stPlotlyChart')) {
    const bar = chart.querySelector('.modebar');
    if (!bar) continue;
    const m = bar.getBoundingClientRect();
    if (m.width === 0) continue;
    for (const t of chart.querySelectorAll('.gtitle, .annotation-text')) {
      const b = t.getBoundingClientRect();
      if (b.width && Math.min(b.right, m.right) - Math.max(b.left, m.left) > 0
          && Math.min(b.bottom, m.bottom) - Math.max(b.top, m.top) > 0) out.push(t.textContent);
    }
  }
  return out;
}"""

# Buttons and select boxes whose text does not fit: the browser cut it with an ellipsis.
CUT = """() => {
  const out = [];
  for (const el of document.querySelectorAll('button, [data-baseweb="select"] [value], [data-baseweb="select"] div')) {
    if (!el.offsetParent || el.children.length > 2) continue;
    for (const t of [el, ...el.querySelectorAll('p, span, div')]) {
      if (t.closest('[data-testid="stIconMaterial"]') || /\\bicon$/.test(t.textContent.trim())) continue;  // an icon's name, drawn as a glyph
      if (t.clientWidth > 0 && t.scrollWidth > t.clientWidth + 1 && t.textContent.trim()) out.push(t.textContent.trim());
    }
  }
  return [...new Set(out)];
}"""


FOUND: dict[str, list] = {}


def measure(page, where: str) -> None:
    """Record what is wrong here; the test fails at its end with every page's findings."""
    page.wait_for_timeout(800)                       # Plotly draws after the script run ends
    for name, script in (("overlap", OVERLAPS), ("under toolbar", UNDER_TOOLBAR), ("cut", CUT)):
        found = page.evaluate(script)
        if found:
            FOUND[f"{where}: {name}"] = found[:8]


def shot(page, name: str, size) -> None:
    """The window as a reader sees it, then each chart on its own (the page scrolls inside the app,
    so a full-page shot stops at the window)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"polish_{name}_{size[0]}.png"))
    for i, chart in enumerate(page.locator(".stPlotlyChart").all()[:6]):
        try:
            chart.scroll_into_view_if_needed(timeout=5_000)
            chart.screenshot(path=str(ARTIFACTS / f"polish_{name}_{size[0]}_chart{i}.png"), timeout=10_000)
        except Exception:  # noqa: BLE001 - a screenshot is for looking at, not part of the verdict
            pass


def saved_result(tmp_path) -> str:
    """A comparison with a reference row and a drifted nf4 row, saved as Compare saves it."""
    ids = torch.tensor([1, 5, 9, 33, 70, 2])
    ref = [fingerprint(tiny_model("llama"), None, ids, "p")]
    drift = compare_fingerprints(ref, [fingerprint(tiny_model("llama", seed=3).to(torch.bfloat16), None, ids, "p")],
                                 "bf16", "nf4")
    runs = [RunRecord("m", "bf16", "m", "bf16", 1.0, 4_000_000, 9_000_000, "rss_sampled", 0.1, 30.0, is_reference=True),
            RunRecord("m", "nf4", "m", "nf4", 1.0, 2_000_000, 5_000_000, "rss_sampled", 0.2, 20.0, drift=drift)]
    path = tmp_path / "compare.json"
    path.write_text(results_to_json(ComparisonResult(CompareConfig(["m"], ["bf16", "nf4"], ["p"]), runs)))
    return str(path)


def test_every_page_at_both_sizes_has_no_overlap_no_cut_text_and_no_title_under_the_toolbar(app_url, browser,
                                                                                           tmp_path):
    result_file = saved_result(tmp_path)
    for size in SIZES:
        context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(f"{app_url}/")
        page.get_by_text("Context", exact=True).first.wait_for(timeout=300_000)    # the model card
        wait_idle(page, 300_000)
        shot(page, "chat", size)
        measure(page, f"chat {size}")

        # a load error: its Dismiss button reads in full
        sidebar = page.locator("section[data-testid='stSidebar']")
        sidebar.get_by_text("Hub id", exact=True).click()
        wait_idle(page)
        page.locator(".st-key-load_hub_id input").fill("no-such-owner/no-such-model-x")
        page.locator(".st-key-load_hub_id input").press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Load", exact=True).click()
        page.locator(".st-key-load_error_dismiss button").wait_for(timeout=120_000)
        wait_idle(page)
        shot(page, "load_error", size)
        measure(page, f"load error {size}")
        page.locator(".st-key-load_error_dismiss button").click()
        wait_idle(page)
        sidebar.get_by_text("Preset", exact=True).click()
        wait_idle(page)

        page.goto(f"{app_url}/architecture")
        wait_idle(page)
        page.locator(".stPlotlyChart").first.wait_for()
        shot(page, "architecture", size)
        measure(page, f"architecture {size}")
        # a click on "layers" zooms the icicle; the path bar that leads back is a readable, labelled strip
        icicle = page.locator(".st-key-arch_hierarchy .stPlotlyChart")
        label = icicle.get_by_text("layers", exact=True).first.bounding_box()    # the slice under it takes the click
        page.mouse.click(label["x"] + label["width"] / 2, label["y"] + label["height"] / 2)
        page.wait_for_timeout(1500)
        bar = icicle.locator("g.pathbar").first.bounding_box()
        assert bar is not None and bar["height"] >= 20, bar
        assert "model" in " ".join(icicle.locator("g.pathbar text").all_text_contents())
        shot(page, "architecture_zoomed", size)
        for tab in ("Memory", "Parameters"):
            tabs = page.get_by_role("tab", name=tab)
            if tabs.count():
                tabs.first.click()
                wait_idle(page)
                shot(page, f"architecture_{tab.lower()}", size)
                measure(page, f"architecture {tab} {size}")

        page.goto(f"{app_url}/internals")
        wait_idle(page)
        page.get_by_label("Or capture a prompt without generating").fill("The capital of France is Paris")
        page.get_by_role("button", name="Capture this prompt").click()
        page.wait_for_timeout(300)
        wait_idle(page)
        page.locator(".stPlotlyChart .gtitle").first.wait_for()
        shot(page, "internals_attention", size)
        measure(page, f"internals attention {size}")
        for view in ("Head summaries",):
            page.get_by_role("radio", name=view).click()
            wait_idle(page)
            shot(page, "internals_head_summaries", size)
            measure(page, f"internals {view} {size}")
        for view in ("Residual & norms", "Logit lens", "Attribution"):
            radio = page.get_by_role("radio", name=view, exact=True)
            if not radio.count():
                continue
            radio.click()
            wait_idle(page)
            page.wait_for_timeout(500)
            wait_idle(page)
            shot(page, f"internals_{view.split()[0].lower()}", size)
            measure(page, f"internals {view} {size}")

        page.goto(f"{app_url}/compare")
        wait_idle(page)
        page.locator(".st-key-cmp_upload input[type='file']").set_input_files(result_file)
        page.get_by_text("Quality drift").first.wait_for()
        wait_idle(page)
        page.wait_for_timeout(1000)
        shot(page, "compare", size)
        measure(page, f"compare {size}")
        # the tables are drawn on a canvas: their "—" for a missing number is checked in tests/views
        ticks = " ".join(page.locator(".st-key-cmp_position_chart .ytick text, .stPlotlyChart .ytick text")
                         .all_text_contents())
        assert "µ" not in ticks
        context.close()
    (ARTIFACTS / "polish_findings.json").write_text(__import__("json").dumps(FOUND, indent=1, ensure_ascii=False))
    assert FOUND == {}
