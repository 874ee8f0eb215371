"""Layer and head switch as the user sees it: key press → the new attention map painted, in Chromium.

Starts `scripts/serve.py` (the embedded model, NF4) on a free port, captures a prompt of --tokens
tokens on the Internals page, then moves the layer slider (ArrowRight) and the head selectbox
--switches times each. For each switch it records
  - first_frame_ms: key press → the first websocket frame from the server (the server's part),
  - painted_ms: key press → the map titled "Layer L · head H" is on screen (a Plotly chart, or the
    HTML map of a large prompt with its image decoded) and two animation
    frames have passed (Plotly has drawn it and the browser has painted),
and the payload of the attention-map figure as the browser received it (bytes of its JSON spec).

Usage: .venv/bin/python bench/bench_repaint.py [--tokens 512] [--switches 8] [--label after]
Appends its run to bench/results/repaint.json and rewrites the "Repaint" table in bench/results/views.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_views import TEXT
from tests.browser.conftest import CHROMIUM_ARGS, served_app

RESULTS = ROOT / "bench" / "results"
GOAL_MS = 300.0
PAINTED = """async (title) => {
  const found = () => {
    for (const chart of document.querySelectorAll('.stPlotlyChart')) {
      const t = chart.querySelector('.gtitle');
      if (t && t.textContent.startsWith(title)) return chart;
    }
    for (const map of document.querySelectorAll('.attention-map-image')) {   // a large map drawn as HTML
      const img = map.querySelector('img');
      if (map.dataset.title.startsWith(title) && img && img.complete) return map;
    }
    return null;
  };
  while (!found()) await new Promise(r => requestAnimationFrame(r));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return true;
}"""


def prompt_text(tokens: int) -> str:
    """About `tokens` tokens of plain English (SmolLM2's tokenizer: ~1.2 tokens per word here)."""
    from transformers import AutoTokenizer

    folder = next((Path.home() / ".cache" / "llm-explorer" / "converted").glob("SmolLM2*"))
    tok = AutoTokenizer.from_pretrained(folder)
    ids: list[int] = []
    while len(ids) < tokens:
        ids += tok(TEXT, add_special_tokens=False)["input_ids"]
    return tok.decode(ids[:tokens])


def summarise(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "n": len(ms)}


def run(tokens: int, switches: int) -> dict:
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    text = prompt_text(tokens)
    out: dict = {}
    log = Path("/tmp") / f"bench_repaint_{os.getpid()}.log"
    with served_app(log) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(300_000)
        frames: list[tuple[float, int]] = []
        page.on("websocket", lambda ws: ws.on("framereceived",
                                              lambda payload: frames.append((time.perf_counter(), len(payload)))))
        idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
        page.goto(url + "/internals")
        page.wait_for_selector(idle)
        page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for()
        page.get_by_label("Or capture a prompt without generating").fill(text)
        page.wait_for_timeout(300)
        page.get_by_role("button", name="Capture this prompt").click()
        page.wait_for_function(PAINTED, arg="Layer ", timeout=600_000)
        page.wait_for_selector(idle)
        page.wait_for_timeout(1500)
        out["tokens"] = int(page.evaluate("""() => {
            const map = document.querySelector('.attention-map-image');
            if (map) return Number(map.dataset.tokens);
            for (const gd of document.querySelectorAll('.js-plotly-plot')) {
              const t = gd.querySelector('.gtitle');
              if (t && t.textContent.startsWith('Layer ')) return gd.layout.meta ? gd.layout.meta.tokens :
                  (gd.data[0].y ? gd.data[0].y.length : -1);
            }
            return -1; }"""))
        slider = page.locator(".st-key-internals_layer input[type='range']")

        def layer_now() -> int:
            return int(slider.get_attribute("aria-valuetext") or slider.input_value())

        def measure(action, title: str) -> tuple[float, float, int]:
            frames.clear()
            t0 = time.perf_counter()
            action()
            page.evaluate(PAINTED, title)
            t1 = time.perf_counter()
            page.wait_for_selector(idle)
            first = next((t for t, _ in frames if t >= t0), t1)
            return (first - t0) * 1000, (t1 - t0) * 1000, sum(n for t, n in frames if t >= t0)

        layer_first, layer_paint, layer_bytes = [], [], []
        for _ in range(switches):
            layer = layer_now()
            if layer >= 28:
                slider.focus()
                slider.press("Home")
                page.wait_for_selector(idle)
                page.wait_for_timeout(500)
                layer = layer_now()
            slider.focus()
            f, p, b = measure(lambda: slider.press("ArrowRight"), f"Layer {layer + 1} · head")
            layer_first.append(f)
            layer_paint.append(p)
            layer_bytes.append(b)
            page.wait_for_timeout(300)
        head_first, head_paint = [], []
        box = page.locator(".st-key-internals_head")
        for i in range(switches):
            head = i % 8 + 1
            box.click()
            option = page.get_by_role("option", name=f"head {head} ·")
            option.wait_for(state="visible")
            page.wait_for_timeout(250)        # the list has finished opening: the clock starts at the click
            title = f"Layer {layer_now()} · head {head} "
            f, p, _ = measure(lambda: option.click(), title)
            head_first.append(f)
            head_paint.append(p)
            page.wait_for_timeout(300)
        out["layer_switch_painted"] = summarise(layer_paint)
        out["layer_switch_first_frame"] = summarise(layer_first)
        out["head_switch_painted"] = summarise(head_paint)
        out["head_switch_first_frame"] = summarise(head_first)
        out["websocket_bytes_per_layer_switch"] = int(statistics.median(layer_bytes))
        browser.close()
    return out


def floor(switches: int) -> dict:
    """The same key press on bench/repaint_floor_app.py (one slider, one small chart), same machine."""
    import socket
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "bench" / "repaint_floor_app.py"),
                             "--server.headless", "true", "--server.port", str(port), "--server.fileWatcherType", "none"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
            page.wait_for_selector(idle)
            page.wait_for_function(PAINTED, arg="Floor 0")
            slider = page.locator(".st-key-v input[type='range']")
            ms = []
            for i in range(switches):
                slider.focus()
                t0 = time.perf_counter()
                slider.press("ArrowRight")
                page.evaluate(PAINTED, f"Floor {i + 1}")
                ms.append((time.perf_counter() - t0) * 1000)
                page.wait_for_selector(idle)
                page.wait_for_timeout(300)
            browser.close()
    finally:
        proc.terminate()
    return summarise(ms)


READING = (
    "Reading (2026-12-01, 2 cores, load 1.5–2.5 during the runs, the bench's own load included): the ≤ 300 ms "
    "goal is **met**. Back to back on the same machine state, 16 switches each: a layer switch paints in 219 ms "
    "median (p90 243) against 347 ms (p90 452) on main 682e15a just before, 0.63×; a head switch in 281 ms "
    "(p90 339) against 475 ms, 0.59×; the floor, a one-slider page, repaints in 170–181 ms, so a layer switch "
    "is now ~40 ms above the fastest any Streamlit page repaints here. What changed: above EXACT_CELLS (160) "
    "tokens the attention map is drawn as plain HTML (explorer/views/figures/map_html.py: the same PNG, tick "
    "labels, colour key and focus box as its Plotly figure, placed by CSS), so a switch decodes a ~97 kB image "
    "instead of Streamlit remounting a Plotly chart and drawing it twice; the GQA chart is drawn once per "
    "capture and the chosen head is a CSS box over it (as the overview's tile), so a head switch redraws no "
    "chart. What the map gives up: hover and zoom on the full map, where a cell is one or two screen pixels "
    "anyway; the \"Full-resolution window\" toggle, now offered above 160 tokens too, shows a window (128 "
    "positions by default; up to 160 a side it is a Plotly heatmap whose hover reads each cell), and the "
    "download is the interactive figure. "
    "The spread across the six runs of 2026-12-01 (same code from the third on): layer switch medians 208–317 ms "
    "against floors of 175–233 ms, at or under 300 ms in five of six, and 30–100 ms above the floor of the same "
    "run in all; the machine's state moves both (the first two are 8 switches while the GQA change was made). "
    "The last two time a head switch from the click on an already open list (before, Playwright's wait for the "
    "list to open was inside the clock); its first frame stays ~120 ms against ~50 ms for the slider, so the "
    "select box itself is slower to send the change than a slider. History: 583 → 446 ms on 2026-11-29 came from "
    "the overview as one image with a CSS outline, fixed map margins and an image colour bar; a narrowed "
    "fragment alone still took 390 ms there, which is why the map itself had to leave Plotly.")


def write_markdown(runs: list[dict]) -> None:
    path = RESULTS / "views.md"
    text = path.read_text() if path.exists() else "# Internals views benchmark\n"
    head = "## Repaint in Chromium (bench/bench_repaint.py)"
    text = text.split(head)[0].rstrip() + "\n\n"
    lines = [head, "",
             f"Key press → the new attention map painted (two animation frames after Plotly drew it, or after the "
             f"HTML map's image decoded), in Debian's "
             f"Chromium (headless, software rendering) at 1600×1000, on the machine below; goal ≤ {GOAL_MS:.0f} ms. "
             "First frame = key press → the first websocket message back (the rerun has begun). "
             "Bytes = everything the server sent for one layer switch.", "",
             "| run | when | machine | tokens | layer switch painted (median / p90) | first frame | "
             "head switch painted (median / p90) | bytes per layer switch | floor (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lp, lf, hp = r["layer_switch_painted"], r["layer_switch_first_frame"], r["head_switch_painted"]
        lines.append(f"| {r['label']} | {r['when']} | {r['machine']} | {r['tokens']} | {lp['median_ms']} / "
                     f"{lp['p90_ms']} ms | {lf['median_ms']} ms | {hp['median_ms']} / {hp['p90_ms']} ms | "
                     f"{r['websocket_bytes_per_layer_switch']:,} | "
                     f"{r['floor']['median_ms'] if 'floor' in r else '–'} ms |")
    lines += ["", "Floor: the same key press on bench/repaint_floor_app.py (a fragment with one slider and one "
              "small chart) right after, on the same machine: no page can repaint faster there.", "",
              READING]
    path.write_text(text + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--switches", type=int, default=8)
    ap.add_argument("--label", default="current")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = run(args.tokens, args.switches)
    res["floor"] = floor(args.switches)
    res.update(label=args.label, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               machine=f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(json.dumps(res, indent=1))
    store = RESULTS / "repaint.json"
    runs = json.loads(store.read_text()) if store.exists() else []
    runs = [r for r in runs if r.get("label") != args.label] + [res]
    store.write_text(json.dumps(runs, indent=1))
    write_markdown(runs)


if __name__ == "__main__":
    main()
