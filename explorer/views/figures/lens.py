"""Logit-lens figures: the top next token after every layer (tokens written in the cells), and how the
final prediction's rank and probability evolve across layers."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.views.figures.axes import title_below_toolbar
from explorer.views.figures.internals import FOCUS_COLOR, f32, labels, layout, plotly_label, plotly_text, span_labels
from explorer.views.lens_data import LensWindow, Trajectory

CELL_CHARS = 6


def lens_heatmap(window: LensWindow, texts: Sequence[str], focus: int | None = None,
                 layer: int | None = None) -> go.Figure:
    """Rows = layers (first at the bottom), columns = positions; each cell names the top guess for the
    next token after that layer, coloured by its probability. Hover lists the top-k."""
    n_l, n_p = len(window.layers), len(window.positions)
    cell_text = np.empty((n_l, n_p), dtype=object)
    hover = np.empty((n_l, n_p), dtype=object)
    for li, lay_i in enumerate(window.layers):
        for pi, pos in enumerate(window.positions):
            cell_text[li, pi] = plotly_text(window.texts[li][pi][0], CELL_CHARS)
            hover[li, pi] = (f"layer {lay_i} · position {pos} (after {plotly_text(texts[pos], 20)})<br>"
                             + "<br>".join(f"{r + 1}. {plotly_text(window.texts[li][pi][r], 24)}  "
                                           f"{window.probs[li, pi, r]:.3f}" for r in range(window.probs.shape[-1])))
    shapes = []
    if focus is not None and focus in window.positions:
        c = window.positions.index(focus)
        shapes.append(dict(type="rect", x0=c - 0.5, x1=c + 0.5, y0=-0.5, y1=n_l - 0.5,
                           line=dict(color=FOCUS_COLOR, width=2)))
    if layer is not None and layer in window.layers:
        r = window.layers.index(layer)
        shapes.append(dict(type="rect", x0=-0.5, x1=n_p - 0.5, y0=r - 0.5, y1=r + 0.5,
                           line=dict(color=FOCUS_COLOR, width=1, dash="dot")))
    y = labels([f"L{l}" for l in window.layers])
    heat = go.Heatmap(z=f32(window.probs[..., 0]), x=span_labels([(p, p + 1) for p in window.positions], texts),
                      y=y, text=cell_text, texttemplate="%{text}",
                      textfont=dict(size=9), customdata=hover, hovertemplate="%{customdata}<extra></extra>",
                      colorscale="YlGnBu", zmin=0, zmax=1, colorbar=dict(title=dict(text="p(top)"), thickness=12))
    lay = layout(f"Logit lens: top next-token guess after each layer · positions "
                 f"{window.positions[0]}–{window.positions[-1]}", int(min(1000, max(420, 22 * n_l + 160))),
                 shapes=shapes,
                 xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=10),
                            title=dict(text="position (input token)")),
                 yaxis=dict(type="category", title=dict(text="layer"), tickmode="array", tickvals=list(y),
                            ticktext=list(y)))
    return go.Figure(data=[heat], layout=title_below_toolbar(lay))


def trajectory_figure(tr: Trajectory, texts: Sequence[str]) -> go.Figure:
    """Probability (left) and rank (right, log scale, 0 = top) of the final prediction per layer."""
    layers = f32(tr.layers)
    hover = [f"layer {l}: top guess {plotly_text(t, 24)}" for l, t in zip(tr.layers, tr.top_texts)]
    known = tr.rank >= 0
    traces = [
        go.Scatter(x=layers, y=f32(tr.prob), mode="lines+markers", line=dict(color="#4C78A8"), hovertext=labels(hover),
                   hovertemplate="%{hovertext}<br>p = %{y:.3f}<extra></extra>", showlegend=False),
        go.Scatter(x=layers[known], y=f32(tr.rank[known] + 1), xaxis="x2", yaxis="y2", mode="lines+markers",
                   line=dict(color="#E45756"), customdata=tr.rank[known].astype(np.int32),
                   hovertext=labels([h for h, k in zip(hover, known) if k]),
                   hovertemplate="%{hovertext}<br>rank %{customdata}<extra></extra>", showlegend=False),
    ]
    note = "" if tr.exact else f" · from the saved top-{tr.k}; gaps = outside the top-{tr.k}"
    titles = [dict(text=t, x=x, y=1.0, xref="paper", yref="paper", showarrow=False, xanchor="center",
                   yanchor="bottom", font=dict(size=12))
              for t, x in (("Probability of the final prediction", 0.22), ("Its rank (0 = top guess)", 0.78))]
    lay = layout(f"Final prediction at position {tr.position}: “{plotly_label(tr.target_text, 24)}”{note}", 380,
                 annotations=titles,
                 xaxis=dict(domain=[0.0, 0.44], title=dict(text="layer"), anchor="y"),
                 yaxis=dict(range=[0, 1.02], anchor="x"),
                 xaxis2=dict(domain=[0.56, 1.0], title=dict(text="layer"), anchor="y2"),
                 yaxis2=dict(type="log", autorange="reversed", title=dict(text="rank (0 = top guess)"), anchor="x2",
                             **rank_ticks(int(tr.rank[known].max()) if known.any() else 0)))
    lay["margin"] = dict(l=10, r=10, t=10, b=10)
    return go.Figure(data=traces, layout=title_below_toolbar(lay, gap_px=30))   # room for the two panel titles


def rank_ticks(top_rank: int) -> dict:
    """Ticks of a rank axis drawn on a log scale of rank + 1 (rank 0 has to sit somewhere): labelled
    with the rank itself, whole numbers only (0, 1, 2, 5, 10, 20, 50 …), as the panel title reads."""
    ranks = [0, 1, 2]
    while ranks[-1] < top_rank:
        ranks.append(ranks[-1] * 5 // 2 if str(ranks[-1])[0] == "2" else ranks[-1] * 2)   # 2, 5, 10, 20, 50 …
    if len(ranks) > 7:                                    # many decades: 0, 1, 10, 100 … so labels keep apart
        ranks = [r for r in ranks if r < 2 or str(r).rstrip("0") == "1"]
    return dict(tickmode="array", tickvals=[r + 1 for r in ranks], ticktext=[str(r) for r in ranks],
                minor=dict(ticks="", showgrid=False))


__all__ = ["lens_heatmap", "rank_ticks", "trajectory_figure"]
