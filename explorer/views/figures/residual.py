"""Residual-stream figures: the norm of every token after every layer, the norm modules' statistics
and gains, and how much each layer's attention and MLP write.

Built in one go.Figure call each (layout as dicts, explicit subplot domains instead of
make_subplots): these redraw when the focused token changes, so their build time is on the path
of a click.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.views.figures.axes import category_ticks, log_axis, title_below_toolbar
from explorer.views.figures.internals import FOCUS_COLOR, cell_of, f32, labels, layout, plotly_label, span_labels
from explorer.views.residual_data import NormRow, ResidualNorms

ROLE_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D")


def residual_norm_heatmap(norms: ResidualNorms, texts: Sequence[str], focus: int | None = None,
                          layer: int | None = None) -> go.Figure:
    """Layers (embeddings at the bottom) × tokens, colour = L2 norm on a log scale.

    Log colour: one massive token (often the first) can be 100× larger than the rest and would
    otherwise leave every other cell the same colour. Hover shows the true value.
    """
    x = span_labels(norms.spans, texts)
    z = np.log10(np.maximum(norms.z, 1e-6)).astype(np.float32)
    lo, hi = float(np.floor(z.min())), float(np.ceil(z.max()))
    ticks = [float(v) for v in np.arange(lo, hi + 0.01, 0.5)]
    shapes = []
    col = cell_of(norms.spans, focus)
    if col is not None:
        shapes.append(dict(type="rect", x0=col - 0.5, x1=col + 0.5, y0=-0.5, y1=len(norms.row_names) - 0.5,
                           line=dict(color=FOCUS_COLOR, width=2)))
    if layer is not None and layer in norms.row_layers:
        row = norms.row_layers.index(layer)
        shapes.append(dict(type="rect", x0=-0.5, x1=len(x) - 0.5, y0=row - 0.5, y1=row + 0.5,
                           line=dict(color="white", width=1, dash="dot")))
    heat = go.Heatmap(z=f32(z), x=x, y=labels(norms.row_names), colorscale="Viridis", customdata=f32(norms.z),
                      colorbar=dict(title=dict(text="‖x‖"), thickness=12, tickvals=ticks,
                                    ticktext=[f"{10 ** v:.3g}" for v in ticks]),
                      hovertemplate="%{y}<br>token %{x}<br>norm %{customdata:.2f}<extra></extra>")
    pooled = "" if norms.factor == 1 else f" · mean over {norms.factor} tokens per cell"
    height = int(min(900, max(380, 16 * len(norms.row_names) + 140)))
    lay = layout(f"Residual norm after each layer (log colour){pooled}", height, shapes=shapes,
                 xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=10), title=dict(text="token")),
                 yaxis=dict(type="category", title=dict(text="residual stream"),
                            **category_ticks(labels(norms.row_names), height - 140)))
    return go.Figure(data=[heat], layout=title_below_toolbar(lay))


def _roles(rows: Sequence[NormRow]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r.role not in seen:
            seen.append(r.role)
    return seen


# 2 × 2 grid: (x axis, y axis, x domain, y domain, title) per panel
_PANELS = (("x", "y", (0.0, 0.45), (0.58, 1.0), "Input RMS"),
           ("x2", "y2", (0.55, 1.0), (0.58, 1.0), "Output std"),
           ("x3", "y3", (0.0, 0.45), (0.0, 0.42), "Output mean"),
           ("x4", "y4", (0.55, 1.0), (0.0, 0.42), "Learned gain (mean, band = min–max)"))


def _grid_layout(num_layers: int | None) -> dict:
    out: dict = {"annotations": []}
    ticks = {}
    if num_layers is not None:
        step = max(1, num_layers // 10)
        vals = list(range(0, num_layers, step)) + [num_layers]
        ticks = dict(tickmode="array", tickvals=vals, ticktext=[str(v) for v in vals[:-1]] + ["final"])
    for xa, ya, xd, yd, title in _PANELS:
        xi, yi = xa[1:], ya[1:]
        out[f"xaxis{xi}"] = dict(domain=list(xd), anchor=ya, title=dict(text="layer") if ya in ("y3", "y4") else None,
                                 **ticks)
        out[f"yaxis{yi}"] = dict(domain=list(yd), anchor=xa)
        out["annotations"].append(dict(text=title, x=(xd[0] + xd[1]) / 2, y=yd[1] + 0.02, xref="paper", yref="paper",
                                       showarrow=False, xanchor="center", yanchor="bottom", font=dict(size=12)))
    return out


def norm_stats_figure(rows: Sequence[NormRow], focus: int | None = None, num_layers: int | None = None) -> go.Figure:
    """Per norm module across layers: input RMS, output mean and std, and the learned gain.

    Solid lines are means over tokens; dotted lines the focused token. The final norm sits at
    x = num_layers ("final").
    """
    traces = []
    for i, role in enumerate(_roles(rows)):
        color = ROLE_COLORS[i % len(ROLE_COLORS)]
        rs = sorted((r for r in rows if r.role == role), key=lambda r: r.layer)
        xs = f32([r.layer for r in rs])
        name = plotly_label(role, 40)
        for (xa, ya, *_), attr in zip(_PANELS[:3], ("input_rms", "output_std", "output_mean")):
            traces.append(go.Scatter(x=xs, y=f32([getattr(r, attr).mean() for r in rs]), xaxis=xa, yaxis=ya,
                                     mode="lines+markers", name=name, legendgroup=role, showlegend=xa == "x",
                                     line=dict(color=color), marker=dict(size=4),
                                     hovertemplate=f"{name}<br>layer %{{x}}<br>%{{y:.3f}}<extra>mean</extra>"))
            if focus is not None and attr != "output_mean":
                traces.append(go.Scatter(x=xs, y=f32([getattr(r, attr)[focus] for r in rs]), xaxis=xa, yaxis=ya,
                                         mode="lines", name=f"{name} (token {focus})", legendgroup=role,
                                         showlegend=False, line=dict(color=color, dash="dot"),
                                         hovertemplate=f"{name}<br>layer %{{x}}<br>%{{y:.3f}}"
                                                       f"<extra>token {focus}</extra>"))
        ws = [r for r in rs if r.weight is not None]
        if ws:
            wx = f32([r.layer for r in ws])
            lo, hi = f32([r.weight.min() for r in ws]), f32([r.weight.max() for r in ws])
            traces.append(go.Scatter(x=np.concatenate([wx, wx[::-1]]), y=np.concatenate([hi, lo[::-1]]), xaxis="x4",
                                     yaxis="y4", fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, legendgroup=role))
            traces.append(go.Scatter(x=wx, y=f32([r.weight.mean() for r in ws]), xaxis="x4", yaxis="y4",
                                     mode="lines+markers", line=dict(color=color), marker=dict(size=4), name=name,
                                     legendgroup=role, showlegend=False,
                                     hovertemplate=f"{name}<br>layer %{{x}}<br>mean gain %{{y:.3f}}<extra></extra>"))
    lay = layout("Norm modules across layers" + ("" if focus is None else f" · dotted: token {focus}"), 580,
                 legend=dict(orientation="h", y=-0.15), **_grid_layout(num_layers))
    return go.Figure(data=traces, layout=title_below_toolbar(lay, gap_px=30))   # room for the panel titles


def gain_heatmap(rows: Sequence[NormRow]) -> go.Figure:
    """Every norm module's learned gain, channel by channel (rows = modules in forward order)."""
    ws = [r for r in rows if r.weight is not None]
    if not ws:
        return go.Figure(layout=layout("No learned gains in this capture", 200))
    width = max(len(r.weight) for r in ws)
    z = np.full((len(ws), width), np.nan, dtype=np.float32)
    for i, r in enumerate(ws):
        z[i, : len(r.weight)] = r.weight
    lo, hi = np.nanpercentile(z, 1), np.nanpercentile(z, 99)
    y = labels(["final norm" if r.role == "final norm" else f"L{r.layer} {plotly_label(r.role, 28)}" for r in ws])
    heat = go.Heatmap(z=z, y=y, colorscale="RdBu_r", zmin=float(lo), zmax=float(hi),
                      colorbar=dict(title=dict(text="gain"), thickness=12),
                      hovertemplate="%{y}<br>channel %{x}<br>gain %{z:.3f}<extra></extra>")
    height = int(min(1100, max(360, 11 * len(ws) + 130)))      # 11 px a row: every 9 px label fits
    lay = layout("Learned gain of every norm module (colour clipped to the 1st–99th percentile)", height,
                 yaxis=dict(type="category", autorange="reversed", tickfont=dict(size=9),
                            **category_ticks(y, height - 130, label_px=11)),
                 xaxis=dict(title=dict(text="hidden channel")))
    return go.Figure(data=[heat], layout=title_below_toolbar(lay))


def contributions_figure(attn: np.ndarray, mlp: np.ndarray, focus: int | None = None,
                         layer: int | None = None) -> go.Figure:
    """Norm of what each layer's attention and MLP add to the stream: mean over tokens, and at the focus."""
    layers = f32(np.arange(attn.shape[0]))
    traces = []
    for name, values, color in (("attention", attn, "#F58518"), ("MLP", mlp, "#54A24B")):
        traces.append(go.Scatter(x=layers, y=f32(values.mean(-1)), mode="lines+markers", name=f"{name} (mean)",
                                 line=dict(color=color), marker=dict(size=5)))
        if focus is not None:
            traces.append(go.Scatter(x=layers, y=f32(values[:, focus]), mode="lines", name=f"{name} (token {focus})",
                                     line=dict(color=color, dash="dot")))
    shapes = []
    if layer is not None:
        shapes.append(dict(type="line", x0=layer, x1=layer, y0=0, y1=1, yref="paper",
                           line=dict(color=FOCUS_COLOR, width=1, dash="dash")))
    lay = layout("What each layer adds: ‖attention output‖ and ‖MLP output‖", 380, shapes=shapes,
                 xaxis=dict(title=dict(text="layer")),
                 yaxis=log_axis(np.concatenate([attn.mean(-1), mlp.mean(-1)] + ([attn[:, focus], mlp[:, focus]]
                                                                                 if focus is not None else [])),
                                title=dict(text="L2 norm")),
                 legend=dict(orientation="h", y=-0.25))
    return go.Figure(data=traces, layout=title_below_toolbar(lay))


__all__ = ["contributions_figure", "gain_heatmap", "norm_stats_figure", "residual_norm_heatmap"]
