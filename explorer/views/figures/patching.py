"""Activation-patching heatmaps: layer × position (residual stream) and layer × head.

Colour is the normalised logit difference on a fixed signed scale (0 = corrupted run, 1 = clean
run), so two results read alike: red restores the clean answer, blue pushes further away.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.views.figures.internals import f32, plotly_text


def _bound(scores: np.ndarray) -> float:
    finite = scores[np.isfinite(scores)]
    return float(max(1.0, np.abs(finite).max(initial=0)))


def _layout(fig: go.Figure, title: str, n_layers: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=int(min(900, max(300, 18 * n_layers + 120))),
                      margin=dict(l=10, r=10, t=60, b=10))
    fig.update_yaxes(title_text="layer", autorange=True)
    return fig


def residual_patching_heatmap(scores, token_texts: Sequence[str], answer_text: str, foil_text: str) -> go.Figure:
    """scores (L, T): the residual after each layer at each position patched from the clean run."""
    z = np.asarray(scores, dtype=np.float32)
    n_layers, t = z.shape
    bound = _bound(z)
    names = [f"{i}: {plotly_text(s, 12)}" for i, s in enumerate(token_texts)] if len(token_texts) == t \
        else [str(i) for i in range(t)]
    fig = go.Figure(go.Heatmap(z=f32(z), x=names, y=f32(range(n_layers)), colorscale="RdBu", reversescale=True,
                               zmin=-bound, zmax=bound, zmid=0, colorbar=dict(title=dict(text="restored"),
                                                                               thickness=12),
                               hovertemplate="after layer %{y} at %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="position", tickangle=-45)
    return _layout(fig, f"Residual patching: how much of “{plotly_text(answer_text, 16)}” over "
                        f"“{plotly_text(foil_text, 16)}” each (layer, position) restores", n_layers)


def head_patching_heatmap(scores, answer_text: str, foil_text: str) -> go.Figure:
    """scores (L, H): each head's output at every position patched from the clean run."""
    z = np.asarray(scores, dtype=np.float32)
    n_layers, n_heads = z.shape
    bound = _bound(z)
    fig = go.Figure(go.Heatmap(z=f32(z), x=f32(range(n_heads)), y=f32(range(n_layers)), colorscale="RdBu",
                               reversescale=True, zmin=-bound, zmax=bound, zmid=0,
                               colorbar=dict(title=dict(text="restored"), thickness=12),
                               hovertemplate="layer %{y} head %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="head")
    return _layout(fig, f"Head patching (all positions): how much of “{plotly_text(answer_text, 16)}” over "
                        f"“{plotly_text(foil_text, 16)}” each head restores", n_layers)


def probability_bars(before: Sequence[tuple[str, float]], after: Sequence[tuple[str, float]]) -> go.Figure:
    """The plain run's and the intervened run's top tokens side by side, as probabilities."""
    names = list(dict.fromkeys([t for t, _ in before] + [t for t, _ in after]))
    b, a = dict(before), dict(after)
    shown = [plotly_text(n, 16) for n in names]
    fig = go.Figure([go.Bar(name="plain", x=shown, y=f32([b.get(n, 0.0) for n in names])),
                     go.Bar(name="with interventions", x=shown, y=f32([a.get(n, 0.0) for n in names]))])
    fig.update_layout(barmode="group", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      yaxis=dict(title="probability", range=[0, 1]), legend=dict(orientation="h"))
    return fig


__all__ = ["head_patching_heatmap", "probability_bars", "residual_patching_heatmap"]
