"""Token vectors in 2-D: a PCA scatter coloured by position, hover showing the token."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.analyse.pca import Projection
from explorer.views.figures.internals import FOCUS_COLOR, f32, labels, layout, plotly_text


def pca_figure(proj: Projection, texts: Sequence[str], title: str, focus: int | None = None) -> go.Figure:
    """One point per token at its first two principal components; colour = position in the prompt.

    Clicking a point selects its token (customdata = position).
    """
    pos = np.asarray(proj.positions, dtype=np.int32)
    traces = [go.Scatter(
        x=f32(proj.coords[:, 0]), y=f32(proj.coords[:, 1]), mode="markers", customdata=pos,
        hovertext=labels([f"{p}: {plotly_text(texts[p], 40)}" for p in proj.positions]), hoverinfo="text",
        showlegend=False,
        marker=dict(size=8, color=f32(pos), colorscale="Viridis", line=dict(width=0.5, color="white"),
                    colorbar=dict(title=dict(text="position"), thickness=12)))]
    if focus is not None and focus in proj.positions:
        i = proj.positions.index(focus)
        traces.append(go.Scatter(x=f32([proj.coords[i, 0]]), y=f32([proj.coords[i, 1]]), mode="markers+text",
                                 text=[plotly_text(texts[focus], 16)], textposition="top center", hoverinfo="skip",
                                 marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(width=2.5, color=FOCUS_COLOR)),
                                 showlegend=False))
    ev = proj.explained.tolist() + [0.0, 0.0]
    lay = layout(title, 440, clickmode="event+select",
                 xaxis=dict(title=dict(text=f"PC1 ({ev[0]:.0%} of variance)"), zeroline=False),
                 yaxis=dict(title=dict(text=f"PC2 ({ev[1]:.0%} of variance)"), zeroline=False))
    return go.Figure(data=traces, layout=lay)


__all__ = ["pca_figure"]
