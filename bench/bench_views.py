"""Benchmark of the internals views on the embedded model (NF4) at 512 tokens.

Measures
  1. server time of a layer/head switch (and of a token switch per view): the Readout accessors and
     figure builders the page's fragment calls, plus the serialisation Streamlit performs on every
     figure it draws (fig.to_dict() then plotly.io.to_json), with the same per-capture figure cache;
  2. first-view costs that are paid once per capture (overview, head summaries, logit-lens window);
  3. figure payload sizes (the JSON Streamlit sends), at 512 tokens and, pooled, at 2048 tokens;
  4. browser time from submitting a prompt to the attention heatmap being painted, and from a layer
     switch to the new heatmap, in Debian's Chromium against a `streamlit run app.py` it starts.

Usage: .venv/bin/python bench/bench_views.py [--tokens 512] [--long 2048] [--switches 16] [--no-browser]
Writes bench/results/views.json and bench/results/views.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotly.io as pio
import psutil
import torch

from explorer.model.loading import LoadConfig, load_model
from explorer.record.capture import capture
from explorer.views.figures.attention import (
    attention_heatmap,
    gqa_figure,
    overview_figure,
    select_tile,
    token_attention_figure,
)
from explorer.views.figures.embeddings import pca_figure
from explorer.views.figures.internals import token_strip
from explorer.views.figures.lens import lens_heatmap, trajectory_figure
from explorer.views.figures.residual import (
    contributions_figure,
    gain_heatmap,
    norm_stats_figure,
    residual_norm_heatmap,
)
from explorer.views.readout import Readout

RESULTS = ROOT / "bench" / "results"
GOAL_MS = 150.0
PAYLOAD_LIMIT = 5 * 1000 * 1000

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based ink and a wooden press adapted from those used to make wine. Before "
        "him, books were copied by hand, which made them rare and expensive; a single Bible could take a "
        "scribe years. Within fifty years of his first prints, presses were working in more than two hundred "
        "cities across Europe, and millions of books had been printed. Scholars could compare identical "
        "copies of a text, errors stopped multiplying with every copy, and ideas travelled faster than ever. ")


def streamlit_payload(fig) -> str:
    """What st.plotly_chart sends for a go.Figure: to_dict() (a deep copy), then to_json."""
    return pio.to_json(fig.to_dict(), validate=False)


def prompt_ids(tokenizer, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    return ids[:n]


class FragmentModel:
    """Does what pages/_internals/fragment.views_fragment does for one run, timing it.

    Keeps the page's per-capture figure cache (keyed the same way), so a number here is what a
    switch costs the server in the app: accessors + builders for what changed + serialisation of
    every figure on screen.
    """

    def __init__(self, r: Readout):
        self.r = r
        self.cache: dict[tuple, object] = {}

    def fig(self, key: tuple, build: Callable):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def run(self, view: str, layer: int, head: int, token: int,
            lens_window: tuple[int, int] | None = None) -> tuple[float, dict[str, int]]:
        r = self.r
        t0 = time.perf_counter()
        figs = {"strip": self.fig(("strip", token), lambda: token_strip(r.texts, token))}
        if view == "attention":
            figs["attention_map"] = self.fig(("attn", layer, head, token),
                                             lambda: attention_heatmap(r.attention_view(layer, head), r.texts, token))
            figs["token_attention"] = self.fig(("ta", token),
                                               lambda: token_attention_figure(r.token_attention(token), r.texts))
            figs["gqa"] = self.fig(("gqa", head), lambda: gqa_figure(r.capture.kv_head_of, head))
            ov = r.overview()
            figs["overview"] = select_tile(self.fig(("ov",), lambda: overview_figure(ov)), ov, (layer, head))
        elif view == "residual":
            figs["residual_norms"] = self.fig(("rn", token, layer),
                                              lambda: residual_norm_heatmap(r.residual_norms(), r.texts, token, layer))
            figs["contributions"] = self.fig(("c", token, layer),
                                             lambda: contributions_figure(*r.contributions(), focus=token, layer=layer))
            figs["norm_stats"] = self.fig(("ns", token),
                                          lambda: norm_stats_figure(r.norm_rows(), token, r.capture.num_layers))
            figs["norm_gain"] = self.fig(("g",), lambda: gain_heatmap(r.norm_rows()))
        elif view == "embeddings":
            figs["pca_embeddings"] = self.fig(("pe", token), lambda: pca_figure(r.projection(None, True, True), r.texts,
                                                                                "emb", token))
            figs["pca_layer"] = self.fig(("pl", layer, token), lambda: pca_figure(r.projection(layer, True, True),
                                                                                    r.texts, "layer", token))
        elif view == "lens":
            a, b = lens_window or (max(0, token - 15), token + 1)   # the page keeps the window when the focus moves
            figs["lens"] = self.fig(("l", a, b, token, layer),
                                    lambda: lens_heatmap(r.lens_window(a, b, 3), r.texts, token, layer))
            figs["trajectory"] = self.fig(("tr", token), lambda: trajectory_figure(r.trajectory(token), r.texts))
        sizes = {name: len(streamlit_payload(f)) for name, f in figs.items()}
        return (time.perf_counter() - t0) * 1000, sizes


def summarise(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1), "n": len(ms)}


def server_bench(loaded, n_tokens: int, switches: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    ids = prompt_ids(loaded.tokenizer, n_tokens)
    t = time.perf_counter()
    cap = capture(loaded.model, loaded.tokenizer, ids)
    capture_s = time.perf_counter() - t
    r = Readout(cap, loaded.model, loaded.tokenizer)
    out: dict = {"tokens": cap.num_tokens, "capture_s": round(capture_s, 2), "first_view_s": {}}
    last = cap.num_tokens - 1
    for name, fn in (("overview (all heads pooled)", r.overview), ("head summaries", r.summary_grids),
                     ("token attention across layers", lambda: r.token_attention(last)),
                     ("logit lens window (16 positions)", lambda: r.lens_window(last - 15, last + 1, 3)),
                     ("final-prediction trajectory", lambda: r.trajectory(last)),
                     ("PCA (embeddings + one layer)", lambda: (r.projection(None, True, True), r.projection(15, True, True)))):
        t = time.perf_counter()
        fn()
        out["first_view_s"][name] = round(time.perf_counter() - t, 2)
    frag = FragmentModel(r)
    frag.run("attention", 15, 0, last)                      # the first paint fills the caches
    pairs = [(rng.randrange(cap.num_layers), rng.randrange(cap.num_heads)) for _ in range(switches)]
    ms, sizes = [], {}
    for layer, head in pairs:
        dt, sizes = frag.run("attention", layer, head, last)
        ms.append(dt)
    out["layer_head_switch"] = summarise(ms)
    out["payload_bytes"] = {"attention": sizes}
    window = (last - 15, last + 1)
    for view in ("residual", "embeddings", "lens"):
        frag.run(view, 15, 0, last, window)
        tokens = [rng.randrange(16, cap.num_tokens) for _ in range(max(4, switches // 2))]
        vms = []
        for tok in tokens:
            dt, vsizes = frag.run(view, 15, 0, tok, window)
            vms.append(dt)
        out[f"token_switch_{view}"] = summarise(vms)
        out["payload_bytes"][view] = vsizes
    out["max_payload_bytes"] = max(v for d in out["payload_bytes"].values() for v in d.values())
    return out


def long_payloads(loaded, n_tokens: int) -> dict:
    """At a long prompt everything is pooled or windowed; check the largest payload."""
    cap = capture(loaded.model, loaded.tokenizer, prompt_ids(loaded.tokenizer, n_tokens))
    r = Readout(cap, loaded.model, loaded.tokenizer)
    frag = FragmentModel(r)
    last = cap.num_tokens - 1
    sizes = {}
    for view in ("attention", "residual", "embeddings", "lens"):
        _, s = frag.run(view, 15, 0, last)
        sizes.update({f"{view}/{k}": v for k, v in s.items()})
    return {"tokens": cap.num_tokens, "payload_bytes": sizes, "max_payload_bytes": max(sizes.values())}


# --------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEATMAP_PAINTED = """({title, rows}) => {
  for (const chart of document.querySelectorAll('.stPlotlyChart')) {
    const t = chart.querySelector('.gtitle');
    const gd = chart.querySelector('.js-plotly-plot');
    if (!t || !t.textContent.startsWith(title) || !chart.querySelector('g.hm image, g.im image')) continue;
    if (rows === null || (gd && gd.data && gd.data[0].y && gd.data[0].y.length === rows)) return true;
  }
  return false;
}"""
"""A heatmap titled `title` is drawn; with `rows`, it must have that many rows (so a stale map from
the previous prompt, still on screen while the new run draws, does not count)."""


def browser_bench(prompts: list[tuple[str, str, int]]) -> dict:
    """prompts: (name, text, tokens the page will capture) in order; the first one runs on a cold server."""
    from playwright.sync_api import sync_playwright

    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return {"skipped": "Debian's chromium is not installed"}
    port = _free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="bench_views_server_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"),
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(300_000)
            idle = "[data-testid='stApp'][data-test-script-state='notRunning']"
            page.goto(url + "/")
            page.get_by_text("SmolLM2-135M-Instruct", exact=False).first.wait_for()
            page.wait_for_selector(idle)
            page.goto(url + "/internals")
            page.wait_for_selector(idle)
            slider = page.locator(".st-key-internals_layer input[type='range']")

            def switches(n: int = 5) -> dict:
                """Layer +1 by keyboard, n times: time from the key press to the new map painted."""
                ms = []
                for _ in range(n):
                    layer = int(slider.get_attribute("aria-valuetext") or slider.input_value())
                    slider.focus()
                    t = time.perf_counter()
                    slider.press("ArrowRight")
                    page.wait_for_function(HEATMAP_PAINTED, arg={"title": f"Layer {layer + 1} · head", "rows": None})
                    ms.append((time.perf_counter() - t) * 1000)
                    page.wait_for_selector(idle)
                return summarise(ms)

            for name, text, rows in prompts:
                page.get_by_label("Or capture a prompt without generating").fill(text)
                page.wait_for_timeout(300)
                t = time.perf_counter()
                page.get_by_role("button", name="Capture this prompt").click()
                page.wait_for_function(HEATMAP_PAINTED, arg={"title": "Layer ", "rows": min(rows, 512)})
                out[f"submit_to_heatmap_s_{name}"] = round(time.perf_counter() - t, 2)
                out[f"tokens_{name}"] = rows
                page.wait_for_selector(idle)
                if name != "short_cold":
                    out[f"layer_switch_to_heatmap_painted_{name}"] = switches()
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def write_markdown(res: dict, path: Path) -> None:
    s = res["server_512"]
    lines = ["# Internals views benchmark", "",
             f"Machine: {res['machine']['platform']}, {res['machine']['cores']} cores, {res['machine']['ram_gib']} GiB RAM, "
             f"GPU: {res['machine']['gpu'] or 'none'}; torch {res['machine']['torch']}; "
             f"load average (1/5/15 min) at start {res['machine']['load_average']}, at end "
             f"{res.get('load_average_end')}: other work shared the 2 cores. Model: {res['model']}.", "",
             f"## Server time per switch ({s['tokens']} tokens; goal ≤ {GOAL_MS:.0f} ms)", "",
             "Accessors + figure builders + Streamlit's serialisation of every figure on screen, with the "
             "page's figure cache.", "", "| switch | median | p90 | max | n |", "|---|---|---|---|---|"]
    for key, label in (("layer_head_switch", "layer/head (attention view)"), ("token_switch_residual", "token (residual view)"),
                       ("token_switch_embeddings", "token (embeddings view)"), ("token_switch_lens", "token (logit-lens view, window kept)")):
        v = s[key]
        lines.append(f"| {label} | {v['median_ms']} ms | {v['p90_ms']} ms | {v['max_ms']} ms | {v['n']} |")
    lines += ["", f"Capture (the one model run per prompt): {s['capture_s']} s.", "",
              "## Paid once per capture (first view)", "", "| what | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["first_view_s"].items()]
    lines += ["", "## Figure payloads (JSON sent per figure)", "", "| view | figure | bytes |", "|---|---|---|"]
    for view, sizes in s["payload_bytes"].items():
        lines += [f"| {view} | {k} | {v:,} |" for k, v in sizes.items()]
    if "long" in res:
        lines += ["", f"At {res['long']['tokens']} tokens (pooled/windowed) the largest payload is "
                      f"{res['long']['max_payload_bytes']:,} bytes (limit {PAYLOAD_LIMIT:,})."]
    b = res.get("browser", {})
    lines += ["", "## Browser (Chromium, headless, same machine)", ""]
    if "skipped" in b or not b:
        lines.append(f"Skipped: {b.get('skipped', 'not run')}")
    else:
        subs = ", ".join(f"{k.removeprefix('submit_to_heatmap_s_')} ({b.get('tokens_' + k.removeprefix('submit_to_heatmap_s_'))} "
                         f"tokens) {v} s" for k, v in b.items() if k.startswith("submit_to_heatmap_s_"))
        lines.append(f"- submit a prompt → attention heatmap painted (includes the capture, i.e. the model run): {subs}")
        for k, sw in b.items():
            if k.startswith("layer_switch_to_heatmap_painted_"):
                name = k.removeprefix("layer_switch_to_heatmap_painted_")
                lines.append(f"- layer switch → new heatmap painted, {name} ({b.get('tokens_' + name)} tokens): median "
                             f"{sw['median_ms']} ms, p90 {sw['p90_ms']} ms, max {sw['max_ms']} ms")
        lines.append("  (server part: see above; the rest is the transfer and Plotly drawing the map in "
                     "software-rendered headless Chromium on the same 2 cores)")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--long", type=int, default=2048)
    ap.add_argument("--switches", type=int, default=16)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    loaded = load_model(LoadConfig(source="embedded", precision="nf4"))
    res["model"] = f"{loaded.name} ({loaded.precision})"
    res["server_512"] = server_bench(loaded, args.tokens, args.switches)
    print(json.dumps(res["server_512"], indent=1))
    if args.long:
        res["long"] = long_payloads(loaded, args.long)
        print(json.dumps(res["long"], indent=1))
    tok = loaded.tokenizer
    long_text = tok.decode(prompt_ids(tok, args.tokens))
    prompts = [(name, text, len(tok(text)["input_ids"])) for name, text in
               (("short_cold", "The capital of France is"), ("short_warm", "Paris is a city in the north of France, on the"),
                (f"{args.tokens}_tokens", long_text))]
    del loaded, tok
    if not args.no_browser:
        res["browser"] = browser_bench(prompts)
        print(json.dumps(res["browser"], indent=1))
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    (RESULTS / "views.json").write_text(json.dumps(res, indent=1))
    write_markdown(res, RESULTS / "views.md")
    print((RESULTS / "views.md").read_text())


if __name__ == "__main__":
    main()
