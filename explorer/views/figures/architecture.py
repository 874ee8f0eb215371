"""Figures of a model's architecture: hierarchy (icicle/treemap), data flow, breakdown, memory.

Pure functions: graphs and dataclasses from explorer.analyse.architecture / memory_estimate in, go.Figure
out. Values go out as float64 arrays, not float32: parameter counts reach 1e10, float32 rounds
them, and a treemap with branchvalues="total" refuses to draw a parent that rounds below the sum
of its children.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import plotly.graph_objects as go

from explorer.analyse.architecture import ROOT, BreakdownRow
from explorer.analyse.data_flow import DataFlow
from explorer.analyse.memory_estimate import GIB, GPU, GPUS, MemoryEstimate
from explorer.views.figures.axes import TOOLBAR_PX, title_below_toolbar
from explorer.views.units import fmt_bytes, fmt_count

ROLE_COLORS = {
    "embeddings": "#4C78A8", "attention": "#F58518", "mlp": "#54A24B", "norms": "#B279A2",
    "lm_head": "#E45756", "other": "#9D755D", None: "#BAB0AC",
}
ROOT_ID = "(model)"
PATHBAR_PX = 26


def _node_id(name: str) -> str:
    return ROOT_ID if name == ROOT else name


def _label(name: str, data: dict) -> str:
    """Leaf name, with its list's name when the leaf is an index ("layers.3" rather than "3")."""
    parent, _, leaf = name.rpartition(".")
    return f"{parent.rpartition('.')[2]}.{leaf}" if leaf.isdigit() else data["label"]


def hierarchy_figure(g: nx.DiGraph, kind: str = "icicle", size_by: str = "params", maxdepth: int = -1,
                     height: int = 560) -> go.Figure:
    """Zoomable module tree sized by parameters (or bytes); the path bar is the breadcrumb.

    Modules without parameters (activations, rotary, dropout) have size 0 and so take no space;
    the module table lists them.
    """
    if kind not in {"icicle", "treemap"}:
        raise ValueError(f"kind must be 'icicle' or 'treemap', not {kind!r}")
    if size_by not in {"params", "bytes"}:
        raise ValueError(f"size_by must be 'params' or 'bytes', not {size_by!r}")
    names = list(nx.dfs_preorder_nodes(g, ROOT))
    nodes = [g.nodes[n] for n in names]
    ids = [_node_id(n) for n in names]
    parents = ["" if n == ROOT else _node_id(n.rpartition(".")[0]) for n in names]
    values = np.array([d[size_by] for d in nodes], dtype=np.float64)
    colors = [ROLE_COLORS.get(d["role"], ROLE_COLORS[None]) for d in nodes]
    custom = [[d["cls"], fmt_count(d["params"]), fmt_bytes(d["bytes"]), d["explain"],
               (d["quant"] or ", ".join(d["dtypes"])) + ("; tied: " + "; ".join(d["tied"]) if d["tied"] else "")]
              for d in nodes]
    trace_cls = go.Icicle if kind == "icicle" else go.Treemap
    trace = trace_cls(
        ids=ids, labels=[_label(n, d) for n, d in zip(names, nodes)], parents=parents, values=values,
        branchvalues="total",
        marker=dict(colors=colors), customdata=custom, maxdepth=maxdepth,
        # the bar that leads back up: thick enough to read and to click, even at the root
        pathbar=dict(visible=True, side="top", thickness=PATHBAR_PX, textfont=dict(size=13),
                     edgeshape=">"),
        hovertemplate="<b>%{id}</b> (%{customdata[0]})<br>%{customdata[1]} params · %{customdata[2]}"
                      "<br>%{customdata[4]}<br><i>%{customdata[3]}</i><extra></extra>",
        **({"tiling": dict(orientation="v")} if kind == "icicle" else {}),
    )
    fig = go.Figure(trace)
    fig.update_layout(height=height, margin=dict(l=4, r=4, t=TOOLBAR_PX, b=4))  # no title: it would sit on the path bar
    return fig


_FLOW_STYLE = {  # kind → (symbol, size, role colour key)
    "embed": ("hexagon", 34, "embeddings"), "positions": ("hexagon", 28, "embeddings"),
    "folded": ("square", 46, None), "stream": ("line-ns", 30, None), "add": ("circle-cross-open", 22, None),
    "norm": ("diamond", 22, "norms"), "attention": ("square", 36, "attention"), "mlp": ("square", 36, "mlp"),
    "head": ("hexagon", 34, "lm_head"),
}


def dataflow_figure(flow: DataFlow, selected: str | None = None, height: int = 340) -> go.Figure:
    """Node-link drawing of the residual stream (y=0) and the branches that write into it (y=1).

    Points follow `flow.nodes` order, so a click's point_index maps back to a FlowNode.
    """
    pos = {n.id: (n.x, n.y) for n in flow.nodes}
    fig = go.Figure()
    for style, width, color in (("stream", 4, "#6C7A89"), ("branch", 2, "#A0AEC0")):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for a, b, kind in flow.edges:
            if kind == style:
                xs += [pos[a][0], pos[b][0], None]
                ys += [pos[a][1], pos[b][1], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(width=width, color=color),
                                 hoverinfo="skip", showlegend=False, name=style))
    symbols, sizes, colors, lines = [], [], [], []
    for n in flow.nodes:
        symbol, size, role = _FLOW_STYLE.get(n.kind, ("circle", 20, None))
        symbols.append(symbol)
        sizes.append(size)
        colors.append(ROLE_COLORS.get(role, ROLE_COLORS[None]) if n.kind != "add" else "#2D3748")
        lines.append(4 if selected is not None and selected in (n.module, n.id) else 1)
    fig.add_trace(go.Scatter(
        x=np.array([n.x for n in flow.nodes], dtype=np.float32),
        y=np.array([n.y for n in flow.nodes], dtype=np.float32),
        mode="markers+text", text=[n.label for n in flow.nodes],
        textposition=["top center" if n.y > 0 else "bottom center" for n in flow.nodes],
        marker=dict(symbol=symbols, size=sizes, color=colors, line=dict(width=lines, color="#1A202C")),
        customdata=[[n.module or "", n.explain] for n in flow.nodes],
        hovertemplate="<b>%{text}</b><br>%{customdata[0]}<br><i>%{customdata[1]}</i><extra></extra>",
        showlegend=False, name="blocks",
    ))
    width = max((n.x for n in flow.nodes), default=0)
    fig.update_layout(title_below_toolbar(dict(
        height=height, margin=dict(l=10, r=10, t=10, b=10), clickmode="event+select", dragmode=False,
        title=dict(text=f"Data flow: {flow.num_layers} decoder layers"
                        + (f", layer {flow.expanded} unfolded" if flow.expanded is not None else ", folded"),
                   x=0, font=dict(size=14)),
        xaxis=dict(visible=False, range=[-0.7, width + 0.7]),
        yaxis=dict(visible=False, range=[-0.8, 1.8], fixedrange=True),
        plot_bgcolor="rgba(0,0,0,0)",
    )))
    fig.add_annotation(x=-0.6, y=-0.65, text="── residual stream (y = 0); branches read from it and add back",
                       showarrow=False, xanchor="left",
                       font=dict(size=10, color="#6C7A89"))
    return fig


def breakdown_figure(rows: list[BreakdownRow], height: int = 300) -> go.Figure:
    """Parameters per part; a tied LM head shows as 0 with its note, since its matrix is counted once."""
    labels = [r.label + (" (tied)" if r.note and r.role == "lm_head" else "") for r in rows]
    fig = go.Figure(go.Bar(
        x=np.array([r.params for r in rows], dtype=np.float64), y=labels, orientation="h",
        marker=dict(color=[ROLE_COLORS.get(r.role, ROLE_COLORS[None]) for r in rows]),
        text=["tied: counted under Embeddings" if r.role == "lm_head" and r.note else
              f"{fmt_count(r.params)} ({r.share:.1%})" for r in rows],
        textposition=["inside" if r.share > 0.15 else "outside" for r in rows], cliponaxis=False,
        customdata=[[fmt_bytes(r.bytes), r.note or ""] for r in rows],
        hovertemplate="%{y}: %{text}<br>%{customdata[0]}<br>%{customdata[1]}<extra></extra>",
    ))
    fig.update_layout(title_below_toolbar(dict(height=height, margin=dict(l=4, r=4, t=4, b=4),
                                               yaxis=dict(autorange="reversed"), xaxis=dict(title=dict(text="parameters")),
                                               title=dict(text="Where the parameters are", x=0, font=dict(size=14)))))
    return fig


def memory_figure(estimates: list[MemoryEstimate], gpus: tuple[GPU, ...] = GPUS, extra_gib: float = 0.0,
                  height: int = 360) -> go.Figure:
    """Weights per precision (allocated, quant state included) against common GPU sizes.

    `extra_gib` (KV cache and runtime reserve) is stacked on top, so a bar below a line fits.
    """
    labels = [e.label for e in estimates]
    weights = np.array([e.allocated_bytes / GIB for e in estimates], dtype=np.float32)
    # the weights' GiB under each bar, not inside it: in a thin segment Plotly shrank it to ~5 px
    ticks = [f"{label}<br>{w:.2f} GiB weights" for label, w in zip(labels, weights)]
    fig = go.Figure(go.Bar(x=labels, y=weights, name="weights (+ quant state)", marker_color="#4C78A8",
                           customdata=[[e.footprint_bytes / GIB] for e in estimates],
                           hovertemplate="%{x}: %{y:.2f} GiB allocated<br>get_memory_footprint ≈ "
                                         "%{customdata[0]:.2f} GiB<extra></extra>"))
    if extra_gib:
        fig.add_trace(go.Bar(x=labels, y=np.full(len(labels), extra_gib, dtype=np.float32),
                             name="KV cache + runtime", marker_color="#BAB0AC"))
    top = float(weights.max(initial=0)) + extra_gib
    shown = sorted((gpu for gpu in gpus if gpu.memory_gib <= top * 1.3), key=lambda g: g.memory_gib)
    title = "Memory per precision vs GPU sizes"
    if not shown:                                   # no line near the bars: say so instead of drawing none
        smallest = min(gpus, key=lambda g: g.memory_gib, default=None)
        if smallest is not None:
            title += f"<br><sup>every precision fits the smallest GPU listed ({smallest.name.split(' (')[0]})</sup>"
    lay = title_below_toolbar(dict(barmode="stack", height=height, margin=dict(l=4, r=4, t=4, b=4),
                                   title=dict(text=title, x=0, font=dict(size=14)),
                                   legend=dict(orientation="h", y=-0.2)))
    lay["xaxis"] = dict(tickmode="array", tickvals=labels, ticktext=ticks)
    ymax = max([top] + [g.memory_gib for g in shown]) * 1.08 or 1.0
    names = [gpu.name.split(" (")[0] for gpu in shown]                    # "Laptop 6 GB": the full name in hover
    lay["margin"]["r"] = 12 + int(6.2 * max((len(n) for n in names), default=0))
    lay["yaxis"] = dict(title=dict(text="GiB"), range=[0, ymax])
    plot_px = height - lay["margin"]["t"] - lay["margin"]["b"] - 60        # the legend below takes ~60 px
    lay["shapes"], lay["annotations"] = [], []
    for gpu, name, y_px in zip(shown, names, _spread([g.memory_gib / ymax * plot_px for g in shown], 14)):
        lay["shapes"].append(dict(type="line", xref="paper", x0=0, x1=1, y0=gpu.memory_gib, y1=gpu.memory_gib,
                                  line=dict(dash="dot", width=1, color="#E45756")))
        # in the right margin, beside its line, moved apart from a neighbour closer than a label's height
        lay["annotations"].append(dict(xref="paper", x=1, xanchor="left", xshift=4, y=gpu.memory_gib, yanchor="middle",
                                       yshift=y_px - gpu.memory_gib / ymax * plot_px, text=name, showarrow=False,
                                       font=dict(size=10, color="#C53030"), hovertext=gpu.name))
    fig.update_layout(lay)
    return fig


def _spread(ys: list[float], gap: float) -> list[float]:
    """Positions (px, ascending input) moved up as little as needed so neighbours are `gap` apart."""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else y)
    return out
