"""Figures of a comparison: memory and speed per run, drift per run, per layer, per head, per position.

Pure functions: a ComparisonResult (or one DriftResult) in, go.Figure out. Arrays go out as
float32 numpy arrays so Plotly sends them as binary.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analyse.drift import DriftResult
from explorer.compare.run import ComparisonResult, RunRecord
from explorer.views.figures.axes import TOOLBAR_PX, log_axis, title_below_toolbar
from explorer.views.text import plotly_text
from explorer.views.units import gib

SUBPLOT_TOP_PX = TOOLBAR_PX + 22     # panel titles sit in the top margin, under the toolbar's strip
PRECISION_COLORS = {"fp32": "#4C78A8", "bf16": "#54A24B", "fp16": "#88D27A", "int8": "#F58518",
                    "nf4": "#E45756", "fp4": "#B279A2"}


def _color(precision: str) -> str:
    return PRECISION_COLORS.get(precision, "#9D755D")


def short_name(name: str, width: int = 24) -> str:
    """A model name that fits under a bar: the folder's last part, cut with an ellipsis."""
    name = name.rstrip("/").rsplit("/", 1)[-1]
    return name if len(name) <= width else name[:width - 1] + "…"


def run_labels(runs: list[RunRecord]) -> list[str]:
    """Axis and legend labels: just the precision when every run is of one model."""
    if len({r.model for r in runs}) <= 1:
        return [r.precision for r in runs]
    return [f"{short_name(r.model_name or r.model)} · {r.precision}" for r in runs]


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def _dashes(runs: list[RunRecord]) -> list[str]:
    """Colour says the precision; the dash says the model, so two models' NF4 lines stay apart."""
    models = list(dict.fromkeys(r.model for r in runs))
    return [_DASHES[models.index(r.model) % len(_DASHES)] for r in runs]


def _f32(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float32)


def speed_memory_figure(result: ComparisonResult, height: int = 380) -> go.Figure:
    """Footprint and peak memory, time to first token, and decode rate, one bar per run."""
    runs = [r for r in result.runs if r.loaded_precision is not None]
    labels = run_labels(runs)
    colors = [_color(r.precision) for r in runs]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Memory (GiB)", "Time to first token (s)",
                                                        "Decode (tokens/s)"))
    fig.add_trace(go.Bar(x=labels, y=_f32([gib(r.footprint_bytes) if r.footprint_bytes else None for r in runs]),
                         name="footprint", marker_color=colors,
                         hovertemplate="%{x}<br>footprint %{y:.3f} GiB<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=_f32([gib(r.peak_bytes) if r.peak_bytes else None for r in runs]),
                         name="peak", marker_color=colors, marker_pattern_shape="/", opacity=0.6,
                         hovertemplate="%{x}<br>peak %{y:.3f} GiB<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=_f32([r.time_to_first_token for r in runs]), marker_color=colors,
                         name="TTFT", showlegend=False, hovertemplate="%{x}<br>%{y:.3f} s<extra></extra>"),
                  row=1, col=2)
    fig.add_trace(go.Bar(x=labels, y=_f32([r.tokens_per_second for r in runs]), marker_color=colors,
                         name="tokens/s", showlegend=False, hovertemplate="%{x}<br>%{y:.1f} tok/s<extra></extra>"),
                  row=1, col=3)
    fig.update_layout(height=height, barmode="group", margin=dict(t=SUBPLOT_TOP_PX, b=10, l=10, r=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def drift_summary_figure(result: ComparisonResult, height: int = 340) -> go.Figure:
    """Next-token KL (log scale) and top-1 agreement of each run against its reference."""
    runs = [r for r in result.runs if r.drift is not None]
    labels = [f"{label} vs {r.drift.reference}" for label, r in zip(run_labels(runs), runs)]
    colors = [_color(r.precision) for r in runs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Next-token KL, mean (nats)", "Top-1 agreement"))
    fig.add_trace(go.Bar(x=labels, y=_f32([max(r.drift.kl_mean, 1e-12) for r in runs]), marker_color=colors,
                         customdata=_f32([r.drift.kl_max for r in runs]),
                         hovertemplate="%{x}<br>mean %{y:.3e}<br>max %{customdata:.3e}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=labels, y=_f32([r.drift.top1_agreement for r in runs]), marker_color=colors,
                         hovertemplate="%{x}<br>%{y:.1%}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(log_axis([max(r.drift.kl_mean, 1e-12) for r in runs]), row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_layout(height=height, showlegend=False, margin=dict(t=SUBPLOT_TOP_PX, b=10, l=10, r=10))
    return fig


def residual_drift_figure(result: ComparisonResult, height: int = 400) -> go.Figure:
    """Per-layer residual cosine and relative error: the layer where a line moves is where drift enters."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Residual cosine similarity",
                                                        "Residual relative error ‖a−b‖/‖a‖ (log)"))
    runs = [r for r in result.runs if r.drift is not None and r.drift.layers]
    for label, dash, r in zip(run_labels(runs), _dashes(runs), runs):
        d = r.drift
        name = f"{label} vs {d.reference}"
        color = _color(r.precision)
        fig.add_trace(go.Scatter(x=np.asarray(d.layers), y=_f32(d.residual_cosine), mode="lines+markers",
                                 name=name, legendgroup=name, line=dict(color=color, dash=dash),
                                 hovertemplate="layer %{x}<br>cos %{y:.6f}<extra>" + name + "</extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=np.asarray(d.layers), y=_f32([max(v, 1e-12) for v in d.residual_rel_error]),
                                 mode="lines+markers", name=name, legendgroup=name, showlegend=False,
                                 line=dict(color=color, dash=dash),
                                 hovertemplate="layer %{x}<br>rel. error %{y:.3e}<extra>" + name + "</extra>"),
                      row=1, col=2)
    fig.update_xaxes(title_text="decoder layer")
    fig.update_yaxes(log_axis([max(v, 1e-12) for r in runs for v in r.drift.residual_rel_error]), row=1, col=2)
    fig.update_layout(height=height, margin=dict(t=SUBPLOT_TOP_PX, b=10, l=10, r=10), legend=dict(orientation="h", y=-0.2))
    return fig


def attention_diff_figure(drift: DriftResult, label: str = "", height: int = 420) -> go.Figure:
    """Layers × heads heatmap of the mean total-variation distance between attention rows."""
    z = np.asarray(drift.attention_diff, dtype=np.float32)                       # (L, H)
    fig = go.Figure(go.Heatmap(z=z, x=np.arange(z.shape[1]) if z.size else [], y=np.asarray(drift.attention_layers),
                               colorscale="Viridis", colorbar=dict(title="TV"),
                               hovertemplate="layer %{y}, head %{x}<br>%{z:.3e}<extra></extra>"))
    title = f"Attention difference per head: {label} vs {drift.reference}" if label else "Attention difference per head"
    fig.update_layout(title_below_toolbar(dict(title=dict(text=title), height=height, margin=dict(t=10, b=10, l=10, r=10),
                                               xaxis=dict(title=dict(text="head"), dtick=1),
                                               yaxis=dict(title=dict(text="layer"), dtick=1))))   # whole layers
    return fig


def position_kl_figure(result: ComparisonResult, prompt_index: int = 0, height: int = 340) -> go.Figure:
    """Next-token KL at each position of one drift prompt, one line per run: where in the prompt it differs."""
    fig = go.Figure()
    tokens: list[str] = []
    runs = [r for r in result.runs if r.drift is not None and prompt_index < len(r.drift.prompts)]
    for label, dash, r in zip(run_labels(runs), _dashes(runs), runs):
        d = r.drift
        p = d.prompts[prompt_index]
        tokens = p.tokens
        fig.add_trace(go.Scatter(x=np.arange(len(p.kl)), y=_f32([max(v, 1e-12) for v in p.kl]), mode="lines",
                                 name=f"{label} vs {d.reference}", line=dict(color=_color(r.precision), dash=dash),
                                 customdata=np.asarray([plotly_text(t, 24) for t in p.tokens], dtype=object),
                                 hovertemplate="pos %{x} «%{customdata}»<br>KL %{y:.3e}<extra></extra>"))
    kl = [max(v, 1e-12) for r in runs for v in r.drift.prompts[prompt_index].kl]
    fig.update_layout(height=height, xaxis_title="position (next token predicted after it)",
                      yaxis=log_axis(kl, title=dict(text="KL (nats)")),     # 0.0001, not Plotly's "100µ"
                      margin=dict(t=TOOLBAR_PX, b=10, l=10, r=10), legend=dict(orientation="h", y=-0.3))
    if tokens and len(tokens) <= 48:
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(tokens))), ticktext=[plotly_text(t) for t in tokens])
    return fig


__all__ = ["attention_diff_figure", "drift_summary_figure", "position_kl_figure", "residual_drift_figure",
           "run_labels", "short_name", "speed_memory_figure"]
