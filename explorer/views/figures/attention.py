"""Attention figures: one head's map, all heads as small multiples, GQA groups, and where one token
looks across layers (the head summaries are in head_summaries.py).

Clickable heatmaps: Plotly heatmaps cannot be selected, so the overview and the summaries carry an
invisible scatter point on every tile/cell whose customdata is [layer, head]; the page reads the
selection from it.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go

from explorer.views.attention_data import AttentionView, Overview, TokenAttention
from explorer.views.figures.axes import category_ticks, title_below_toolbar
from explorer.views.figures.image import colour_table, heatmap_png, png_uri
from explorer.views.figures.internals import CLICK_MARKER, FOCUS_COLOR, cell_of, f32, labels, layout, plotly_label, span_labels
from explorer.views.figures.map_spec import FIXED_AXIS, Axis, ColourKey, MapFigure, MapSpec, Margin, map_figure, refocus

EXACT_CELLS = 160        # up to this many cells a side the map carries its numbers (hover reads them)
ROW_PX = 12              # screen pixels a labelled row needs (10 px font: its 13 px boxes touch by 1 px at most)
SLANT_PX = 14            # ... and a key label at -60° along the x axis (12 px across / sin 60°)
MAP_MIN_PX, MAP_MAX_PX = 380, 900
MAP_CHROME_PX = 170      # title, x labels, margins
# Toolbar buttons that do nothing on a chart whose axes are fixed: without them the toolbar of a
# narrow chart is one short row (with them it wrapped onto the title at 1280 px)
FIXED_CHART_TOOLS = ["zoom", "pan", "select", "lasso", "zoomIn", "zoomOut", "autoScale", "resetScale"]
MAP_CHART_PX = 496       # width of the map's chart at 1280×800, the narrowest window: its x labels must fit there
COLOUR_BAR_PX = 92       # right margin of a small map: Plotly's colour bar and its title (91 measured)
AUTOMARGIN_PX = 16       # what Plotly still adds to a small map's left margin at 1280 px (measured)


CHAR_PX = 5.2            # average glyph of a 10 px tick label (4.4 measured in Chromium), with room to spare


def map_height(n_rows: int, chrome_px: int = MAP_CHROME_PX, cap_px: int = MAP_MAX_PX) -> int:
    """Grows with the rows so that every label fits (ROW_PX each), up to `cap_px`; beyond that the
    labels are thinned evenly (tick_cells) and, past MAX_SIDE tokens, the map is pooled."""
    return int(min(cap_px, max(MAP_MIN_PX, ROW_PX * n_rows + chrome_px)))


def label_step(n: int, room_px: float, pitch_px: float = ROW_PX) -> int:
    """Label every k-th of `n` cells, k the smallest that keeps labels `pitch_px` apart in `room_px`:
    the one thinning rule of the map's axes (tick_cells draws it, thinned_title says it)."""
    return max(1, int(np.ceil(n * pitch_px / max(room_px, pitch_px) - 1e-9)))


def tick_cells(n: int, room_px: float, keep: int | None = None, pitch_px: float = ROW_PX) -> list[int]:
    """Evenly spaced cells to label so that labels `pitch_px` apart never overlap; `keep` (the focus) is
    always labelled, replacing the regular ticks less than a step away (so it is clear of them too)."""
    step = label_step(n, room_px, pitch_px)
    cells = list(range(0, n, step))
    if keep is not None and 0 <= keep < n and keep not in cells:
        cells = [c for c in cells if abs(c - keep) >= step] + [keep]
    return sorted(cells)


def thinned_title(name: str, step: int, hover: bool = True) -> str:
    """An axis title that says when not every cell is labelled (and, `hover`, that hover names each)."""
    if step <= 1:
        return name
    suffix = "th" if 10 <= step % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    nth = f"{step}{suffix}"
    return f"{name} · every {nth} labelled" + (", hover names each" if hover else "")


def focus_row(fig: go.Figure, spans, focus: int | None) -> go.Figure:
    """Outline the focused token's row, in place: a token switch moves a box, the map stays."""
    row = cell_of(spans, focus)
    if isinstance(fig, MapFigure):      # a large map: its spec moves with it (map_html draws from it)
        return refocus(fig, row)
    n_k = fig.layout.meta["cols"] if fig.layout.meta else 0
    fig.layout.shapes = [] if row is None else [
        dict(type="rect", x0=-0.5, x1=n_k - 0.5, y0=row - 0.5, y1=row + 0.5, line=dict(color=FOCUS_COLOR, width=2))]
    return fig


def attention_heatmap(view: AttentionView, texts: Sequence[str], focus: int | None = None,
                      max_px: int = MAP_MAX_PX, every_label: bool = False) -> go.Figure:
    """One head: row = query, column = key, colour = attention probability.

    Numeric axes, labelled "12 ␣the". Every row is labelled while ROW_PX rows fit under the height
    cap (`max_px`: a long prompt's map is kept short enough to share the window with its controls;
    `every_label` lifts it for a map of up to EXACT_CELLS rows, which then grows to label them all);
    beyond that every k-th row, evenly, and always the focused one. Key labels must fit the chart's
    width at 1280 px (MAP_CHART_PX). Axis titles say when labels are thinned; hover names each
    cell's tokens. Up to EXACT_CELLS a side the trace is a float32 heatmap whose hover reads the
    value; a larger map is a PNG image trace (see figures/image.py): ~90 kB instead of 1.4 MB at 512
    tokens, which the browser paints without colouring every cell.
    """
    n_q, n_k = view.z.shape
    how = "" if view.factor == 1 else f" · pooled {view.factor} tokens per cell"
    if view.window:
        how = f" · full resolution, queries {view.q_spans[0][0]}–{view.q_spans[-1][1] - 1}, " \
              f"keys {view.k_spans[0][0]}–{view.k_spans[-1][1] - 1}"
    all_y, all_x = span_labels(view.q_spans, texts), span_labels(view.k_spans, texts)
    margin = label_margins(all_y, all_x)                   # fits the longest label, whichever are shown
    image = max(n_q, n_k) > EXACT_CELLS
    if not image:                                          # Plotly's colour bar, and its automargin
        margin = replace(margin, right=COLOUR_BAR_PX, left=margin.left + AUTOMARGIN_PX)
    chrome = margin.top + margin.bottom
    cap = 10 ** 6 if every_label and n_q <= EXACT_CELLS else max(MAP_MIN_PX, max_px)
    height = map_height(n_q, chrome, cap)
    zmax = float(np.nanmax(view.z)) if view.z.size else 1.0
    room_y, room_x = height - chrome, MAP_CHART_PX - margin.left - margin.right
    q_ticks = tick_cells(n_q, room_y, cell_of(view.q_spans, focus))
    k_ticks = tick_cells(n_k, room_x, pitch_px=SLANT_PX)
    # the picture of a large map (drawn as HTML on the page) has no hover: its titles do not offer one
    y_title = thinned_title("query token", label_step(n_q, room_y), hover=not image)
    x_title = thinned_title("key token (attended to)", label_step(n_k, room_x, SLANT_PX), hover=not image)
    y_text = [all_y[c] for c in q_ticks]
    x_text = [all_x[c] for c in k_ticks]
    title = f"Layer {view.layer} · head {view.head} (KV head {view.kv_head}){how}"
    if image:                              # a PNG, one pixel per cell, described once for figure and HTML
        per_cell = "" if view.factor == 1 else f" ({view.factor} tokens per cell)"
        spec = MapSpec(title=title, image=heatmap_png(view.z, "Blues", zmax),
                       hover=f"query cell %{{y}} · key cell %{{x}}{per_cell}<br>the colour bar reads the value"
                             "<extra></extra>",
                       rows=Axis(y_title, n_q, tuple(zip(q_ticks, y_text))),
                       cols=Axis(x_title, n_k, tuple(zip(k_ticks, x_text))),
                       height=height, margin=margin, key=colour_key("Blues", zmax, "attention"), tokens=len(texts))
        return map_figure(spec.with_focus(cell_of(view.q_spans, focus)))
    # category axes: hover names both tokens and reads the value
    traces = [go.Heatmap(z=f32(view.z), x=all_x, y=all_y, colorscale="Blues", zmin=0.0, zmax=zmax,
                         colorbar=dict(title=dict(text="attention"), thickness=12),
                         hovertemplate="query %{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>")]
    yaxis = dict(title=dict(text=y_title), tickfont=dict(size=10), autorange="reversed", type="category",
                 tickvals=y_text, ticktext=y_text)
    xaxis = dict(title=dict(text=x_title), tickangle=-60, tickfont=dict(size=10), type="category",
                 tickvals=x_text, ticktext=x_text)
    lay = layout(title, height, meta=dict(cols=n_k, rows=n_q, tokens=len(texts)), yaxis=yaxis, xaxis=xaxis)
    lay["margin"] = dict(l=margin.left, r=margin.right, t=margin.top, b=margin.bottom)   # what the ticks were fitted to
    return focus_row(go.Figure(data=traces, layout=lay), view.q_spans, focus)


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 × 10^k) up to `top`, at most `most` of them."""
    if not top > 0:
        return [0.0]
    raw = top / (most - 1)
    base = 10 ** np.floor(np.log10(raw))
    step = next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)
    return [float(round(i * step, 10)) for i in range(int(top / step + 1e-9) + 1)]


def colour_key(scale: str, zmax: float, title: str) -> ColourKey:
    """A colour key for values 0..zmax: the scale as a 1 × 128 PNG (top = zmax) and a few round ticks."""
    ramp = heatmap_png(np.linspace(zmax, 0.0, 128, dtype=np.float32)[:, None], scale, zmax)   # top = zmax
    ticks = tuple((v / zmax if zmax > 0 else 0.0, f"{v:g}") for v in nice_ticks(zmax))
    return ColourKey(ramp, title, ticks)


def label_margins(y_text: Sequence[str], x_text: Sequence[str]) -> Margin:
    """Margins that fit the y labels, the x labels rotated 60°, both axis titles and the colour bar,
    computed here so that the browser does not measure them (see FIXED_AXIS)."""
    def chars(texts: Sequence[str]) -> int:
        return max((len(html.unescape(t)) for t in texts), default=1)
    return Margin(left=int(CHAR_PX * chars(y_text)) + 32, right=72, top=40,
                  bottom=int(0.87 * CHAR_PX * chars(x_text)) + 40)


def _group_offsets(kv_head_of: Sequence[int], width: int) -> list[int]:
    """x offset of each head's tile: one empty column between heads, two between KV groups."""
    offsets, x = [], 0
    for h, kv in enumerate(kv_head_of):
        if h > 0:
            x += width + (2 if kv != kv_head_of[h - 1] else 1)
        offsets.append(x)
    return offsets


def overview_figure(ov: Overview, selected: tuple[int, int] | None = None) -> go.Figure:
    """Every (layer, head) map as a tile, each scaled to its own maximum so faint patterns show.

    The mosaic is one PNG image trace (share of the tile's maximum on the Blues scale, white gaps):
    colour is all it carries (hover names the tile, not a value), and the browser decodes an image
    instead of colouring every cell (67 ms instead of 220 ms a draw in software-rendered Chromium,
    30 × 9 heads). The page draws it once per capture; the selection outline moves over it
    (tile_outline).
    """
    n_layers, n_heads, n, _ = ov.tiles.shape
    xs = _group_offsets(ov.kv_head_of, n)
    width = xs[-1] + n
    height = n_layers * (n + 1) - 1
    mosaic = np.zeros((height, width), dtype=np.uint8)                        # colour level per pixel
    gap = np.ones((height, width), dtype=bool)
    peak = ov.tiles.reshape(n_layers, n_heads, -1).max(-1)                    # (L, H)
    scaled = np.rint(255 * ov.tiles / np.maximum(peak, 1e-9)[..., None, None]).astype(np.uint8)
    for li in range(n_layers):
        y0 = li * (n + 1)
        for h in range(n_heads):
            mosaic[y0:y0 + n, xs[h]:xs[h] + n] = scaled[li, h]
            gap[y0:y0 + n, xs[h]:xs[h] + n] = False
    rgb = colour_table("Blues")[mosaic]                                       # (height, width, 3)
    rgb[gap] = 255                                                            # white between tiles
    heat = go.Image(source=png_uri(rgb), x0=0, dx=1, y0=0, dy=1, hoverinfo="skip")
    cx = [xs[h] + (n - 1) / 2 for h in range(n_heads)]
    cy = [li * (n + 1) + (n - 1) / 2 for li in range(n_layers)]
    gx, gy = np.meshgrid(np.arange(n_heads), np.arange(n_layers))
    # [layer, head] per tile as plain lists: a typed array would reach the page's callback as {"0": l, "1": h}
    custom = np.stack([np.asarray(ov.layers)[gy.ravel()], gx.ravel()], -1).astype(np.int32)
    hover = labels([f"layer {ov.layers[li]} · head {h} (KV {ov.kv_head_of[h]})<br>click to open"
                    for li, h in zip(gy.ravel(), gx.ravel())])
    clicks = go.Scatter(x=f32(np.asarray(cx)[gx.ravel()]), y=f32(np.asarray(cy)[gy.ravel()]), mode="markers",
                        customdata=custom.tolist(), hovertext=hover, hoverinfo="text", showlegend=False,
                        marker=dict(symbol="square", size=max(8, min(30, 3 * n)), color=CLICK_MARKER))
    lay = layout(f"All layers × heads ({ov.factor} token{'s' if ov.factor > 1 else ''} per cell; "
                 "each tile scaled to its own maximum) · click a tile", int(min(1400, max(420, 26 * n_layers + 110))),
                 xaxis=dict(tickvals=cx, ticktext=[f"h{h}<br>kv{ov.kv_head_of[h]}" for h in range(n_heads)],
                            side="top", range=[-0.5, width - 0.5], fixedrange=True, **FIXED_AXIS),
                 yaxis=dict(tickvals=cy, ticktext=[f"L{layer}" for layer in ov.layers], range=[height - 0.5, -0.5],
                            fixedrange=True, scaleanchor=False, **FIXED_AXIS),   # tiles fill the width
                 clickmode="event+select", dragmode=False)
    lay["margin"] = dict(l=16 + 8 * max(len(f"L{layer}") for layer in ov.layers), r=10, t=110, b=10)   # 12 px labels
    fig = go.Figure(data=[heat, clicks], layout=lay)
    return select_tile(fig, ov, selected)


def _tile_box(ov: Overview, selected: tuple[int, int] | None) -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1) of the selected tile's outline in mosaic cells, or None when not in the overview."""
    if selected is None or selected[0] not in ov.layers or not 0 <= selected[1] < len(ov.kv_head_of):
        return None
    n = ov.tiles.shape[2]
    x, li = _group_offsets(ov.kv_head_of, n)[selected[1]], ov.layers.index(selected[0])
    return x - 0.8, x + n - 0.2, li * (n + 1) - 0.8, li * (n + 1) + n - 0.2


def select_tile(fig: go.Figure, ov: Overview, selected: tuple[int, int] | None) -> go.Figure:
    """Outline the selected (layer, head) tile as a layout shape, replacing any earlier outline, in place.

    For a figure drawn once (a download, a notebook). The page instead keeps the figure unchanged and
    lays `tile_outline` over it: any change to a figure makes Streamlit remount and redraw it.
    """
    box = _tile_box(ov, selected)
    fig.layout.shapes = [] if box is None else [
        dict(type="rect", x0=box[0], x1=box[1], y0=box[2], y1=box[3], line=dict(color=FOCUS_COLOR, width=2))]
    return fig


@dataclass(frozen=True)
class Outline:
    """Where the selected tile lies on the drawn overview: fixed margins in px (the figure's own),
    and the tile as fractions of the plot area (0–1, from the top left), which scales with it."""
    margin: dict
    left: float
    right: float
    top: float
    bottom: float
    color: str = FOCUS_COLOR


def tile_outline(fig: go.Figure, ov: Overview, selected: tuple[int, int] | None) -> Outline | None:
    """The selected tile's outline on overview_figure(ov), for a page to draw over the figure.

    Why not a shape in the figure: the overview is the largest figure of the view, and a shape that
    moves with every layer or head switch made the browser remount and draw it twice per switch
    (~250 ms in software-rendered Chromium). Its margins are fixed (no automargin), so a box placed
    by these fractions lands on the tile at any width.
    """
    box = _tile_box(ov, selected)
    if box is None:
        return None
    (xa, xb), (ya, yb) = fig.layout.xaxis.range, fig.layout.yaxis.range        # y is reversed: ya > yb
    m = fig.layout.margin
    return Outline(dict(l=m.l, r=m.r, t=m.t, b=m.b), (box[0] - xa) / (xb - xa), (box[1] - xa) / (xb - xa),
                   (box[2] - yb) / (ya - yb), (box[3] - yb) / (ya - yb))


def gqa_figure(kv_head_of: Sequence[int], selected_head: int | None = None) -> go.Figure:
    """Query heads (top) joined to the KV head each one reads (bottom)."""
    n_heads = len(kv_head_of)
    n_kv = max(kv_head_of) + 1 if n_heads else 0
    kv_x = [float(np.mean([h for h in range(n_heads) if kv_head_of[h] == g])) for g in range(n_kv)]
    lx: list = []
    ly: list = []
    for h, g in enumerate(kv_head_of):
        lx += [h, kv_x[g], None]
        ly += [1, 0, None]
    traces = [
        go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="#9AA5B1", width=1.5), hoverinfo="skip", showlegend=False),
        go.Scatter(x=f32(range(n_heads)), y=f32([1] * n_heads), mode="markers+text",
                   text=labels([f"q{h}" for h in range(n_heads)]), textposition="top center", name="query heads",
                   marker=dict(size=16, color=labels([FOCUS_COLOR if h == selected_head else "#4C78A8"
                                                      for h in range(n_heads)])),
                   hovertext=labels([f"query head {h} reads KV head {kv_head_of[h]}" for h in range(n_heads)]),
                   hoverinfo="text"),
        go.Scatter(x=f32(kv_x), y=f32([0] * n_kv), mode="markers+text", text=labels([f"kv{g}" for g in range(n_kv)]),
                   textposition="bottom center", marker=dict(size=20, symbol="diamond", color="#F58518"),
                   name="KV heads", hoverinfo="text",
                   hovertext=labels([f"KV head {g}: shared by {sum(1 for k in kv_head_of if k == g)} query heads"
                                     for g in range(n_kv)])),
    ]
    # two short lines on the left: at 1280 px the chart is ~190 px wide and its toolbar stands on the right
    lay = layout(f"GQA<br><sup>{n_heads} query heads → {n_kv} KV heads</sup>", 234, showlegend=False,
                 modebar=dict(orientation="v", remove=FIXED_CHART_TOOLS),
                 xaxis=dict(visible=False, range=[-0.8, n_heads - 0.2], fixedrange=True),
                 yaxis=dict(visible=False, range=[-0.6, 1.6], fixedrange=True))
    lay["title"].update(x=0.01, xanchor="left")
    return go.Figure(data=traces, layout=title_below_toolbar(lay))


def head_outline(fig: go.Figure, head: int | None) -> Outline | None:
    """A box around query head `head` (marker and label) on gqa_figure(), for a page to draw over it
    (see tile_outline): the figure stays the same for every head, so a head switch redraws nothing."""
    n_heads = len(fig.data[1].x) if len(fig.data) > 1 else 0
    if head is None or not 0 <= head < n_heads:
        return None
    (xa, xb), (ya, yb) = fig.layout.xaxis.range, fig.layout.yaxis.range        # y runs up: ya < yb
    m = fig.layout.margin
    x0, x1, y0, y1 = head - 0.42, head + 0.42, 0.78, 1.5                      # the marker and its label above
    return Outline(dict(l=m.l, r=m.r, t=m.t, b=m.b), (x0 - xa) / (xb - xa), (x1 - xa) / (xb - xa),
                   (yb - y1) / (yb - ya), (yb - y0) / (yb - ya))


HALF_WIDTH_PX = 125      # plot width of the half-width chart at 1280×800 (129 measured; colour bar and labels take the rest)


def token_attention_figure(ta: TokenAttention, texts: Sequence[str]) -> go.Figure:
    """Rows = layers (first at the bottom), columns = earlier tokens, colour = attention from the token.

    Drawn at half width: x labels are thinned so they never overlap, the title is two short lines on
    the left, and the toolbar stands vertically on the right, clear of it.
    """
    keep = [i for i, (a, _) in enumerate(ta.k_spans) if a <= ta.token] or [0]
    x = span_labels([ta.k_spans[i] for i in keep], texts)
    ticks = [x[c] for c in tick_cells(len(keep), HALF_WIDTH_PX, pitch_px=SLANT_PX)]
    x_title = thinned_title("key token", label_step(len(keep), HALF_WIDTH_PX, SLANT_PX), hover=False)
    heat = go.Heatmap(z=f32(ta.z[:, keep]), x=x, y=labels([f"L{layer}" for layer in ta.layers]), colorscale="Purples",
                      zmin=0, colorbar=dict(title=dict(text="attention"), thickness=12),
                      hovertemplate="%{y}<br>key %{x}<br>attention %{z:.3f}<extra></extra>")
    who = "mean over heads" if ta.head is None else f"head {ta.head}"
    lay = layout(f"Attention from token {ta.token} “{plotly_label(texts[ta.token], 16)}”<br>"
                 f"<sup>in every layer · {who}</sup>", int(min(900, max(360, 14 * len(ta.layers) + 160))),
                 xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=10), title=dict(text=x_title),
                            tickvals=ticks, ticktext=ticks),
                 yaxis=dict(type="category", title=dict(text="layer"), tickfont=dict(size=10),   # every layer while 13 px rows fit
                            **category_ticks(heat.y, int(min(900, max(360, 14 * len(ta.layers) + 160))) - 160)),
                 modebar=dict(orientation="v"))
    lay["title"].update(x=0.01, xanchor="left")
    lay["margin"] = dict(l=10, r=40, t=64, b=10)
    return go.Figure(data=[heat], layout=lay)


__all__ = ["EXACT_CELLS", "FIXED_CHART_TOOLS", "Outline", "attention_heatmap", "colour_key", "focus_row", "gqa_figure",
           "head_outline", "label_step", "map_height", "nice_ticks", "overview_figure",
           "select_tile", "thinned_title", "tick_cells", "tile_outline", "token_attention_figure"]
