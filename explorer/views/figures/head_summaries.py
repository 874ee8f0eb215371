"""Head summaries: one number per (layer, head), drawn as a heatmap with a row per head and a column
per layer; a click on a cell opens that head (an invisible point per cell carries [layer, head], as
on the overview in attention.py)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.views.figures.attention import FIXED_CHART_TOOLS
from explorer.views.figures.axes import category_ticks, title_below_toolbar
from explorer.views.figures.internals import CLICK_MARKER, FOCUS_COLOR, f32, labels, layout

SUMMARY_METRICS = {
    "entropy": ("Entropy (nats)", "Viridis"),
    "first_token": ("First-token share", "Reds"),
    "lookback": ("Look-back distance (tokens)", "Blues"),
}


def select_cell(fig: go.Figure, layers: Sequence[int], selected: tuple[int, int] | None) -> go.Figure:
    """Outline the selected (layer, head) cell of a summary heatmap (a column per layer, a row per
    head), in place (see select_tile); the KV group rules stay."""
    shapes = [s for s in fig.layout.shapes if s.name != "selected"]
    if selected is not None and selected[0] in layers and selected[1] is not None:
        li = list(layers).index(selected[0])
        shapes.append(dict(type="rect", name="selected", x0=li - 0.5, x1=li + 0.5, y0=selected[1] - 0.5,
                           y1=selected[1] + 0.5, line=dict(color=FOCUS_COLOR, width=2)))
    fig.layout.shapes = shapes
    return fig


SUMMARY_ROW_PX = 18      # a head's row: its upright 10 px label and a cell big enough to click
SUMMARY_PLOT_PX = 370    # plot width of a summary at 1280×800, the narrowest window it is drawn for (376 measured)
DIGIT_PX = 5             # a digit of a 10 px tick label (4.99 measured in Chromium)


def head_summary_figure(values: np.ndarray, layers: Sequence[int], kv_head_of: Sequence[int], metric: str,
                        selected: tuple[int, int] | None = None, at_token: int | None = None) -> go.Figure:
    """One summary metric, a row per head and a column per layer; click a cell to open that head.

    Why heads down the side: the page stacks the three metrics at full width, so every head keeps an
    upright label ("h4 · kv1", the KV group it reads, with a rule between groups) and 30 layer numbers
    fit across at 1280 px. Side by side, layers down the side, a head's column was ~6 px wide and
    no head label could fit.
    """
    title, scale = SUMMARY_METRICS[metric]
    n_layers, n_heads = values.shape
    x = labels([str(layer) for layer in layers])
    y = labels([f"h{h} · kv{kv_head_of[h]}" for h in range(n_heads)])
    heat = go.Heatmap(z=f32(values.T), x=x, y=y, colorscale=scale, hoverinfo="skip",    # (heads, layers)
                      colorbar=dict(thickness=10, xpad=4, nticks=5))
    gx, gy = np.meshgrid(np.arange(n_heads), np.arange(n_layers))     # layer-major: point i = layer i // H, head i % H
    custom = np.stack([np.asarray(layers)[gy.ravel()], gx.ravel()], -1).astype(np.int32)
    hover = labels([f"layer {layers[i]} · head {h} (KV {kv_head_of[h]})<br>{title}: {values[i, h]:.3f}<br>"
                    "click to open" for i, h in zip(gy.ravel(), gx.ravel())])
    clicks = go.Scatter(x=x[gy.ravel()], y=y[gx.ravel()], mode="markers", customdata=custom.tolist(),
                        hovertext=hover, hoverinfo="text", showlegend=False,
                        marker=dict(symbol="square", size=12, color=CLICK_MARKER))
    where = "mean over query tokens" if at_token is None else f"at token {at_token}"
    plot_h = SUMMARY_ROW_PX * n_heads
    width_px = DIGIT_PX * max(len(s) for s in x) + 2     # 30 layers: 12 px each, all labelled at 1280 px
    rules = [dict(type="line", name="kv group", x0=-0.5, x1=n_layers - 0.5, y0=h - 0.5, y1=h - 0.5,
                  line=dict(color="white", width=3)) for h in range(1, n_heads) if kv_head_of[h] != kv_head_of[h - 1]]
    lay = layout(f"{title}<br><sup>{where} · a row per head, a column per layer</sup>", 0, shapes=rules,
                 xaxis=dict(type="category", title=dict(text="layer", standoff=4), fixedrange=True,
                            tickfont=dict(size=10), tickangle=0,
                            **category_ticks(x, SUMMARY_PLOT_PX, label_px=width_px)),
                 yaxis=dict(type="category", autorange="reversed", fixedrange=True, tickfont=dict(size=10),
                            **category_ticks(y)),                         # every head: rows are SUMMARY_ROW_PX
                 clickmode="event+select", dragmode=False, modebar=dict(remove=FIXED_CHART_TOOLS))
    lay["margin"] = dict(l=10, r=10, t=10, b=50)
    lay = title_below_toolbar(lay)
    lay["height"] = plot_h + lay["margin"]["t"] + lay["margin"]["b"]
    return select_cell(go.Figure(data=[heat, clicks], layout=lay), layers, selected)


__all__ = ["SUMMARY_METRICS", "head_summary_figure", "select_cell"]
