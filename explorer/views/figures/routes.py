"""The information-flow routes graph: tokens along x, layers up y, edges as lines.

Layout: the residual entering layer l at token i sits at (i, l); the state after layer l's
attention at (i, l + ½); layer l's MLP beside it at (i + ⅓, l + ¾). Lines cannot be clicked between
their vertices, so every edge also has an invisible marker at its middle whose customdata is
[0, edge index]; nodes carry [1, node index]. Edges are grouped into a few traces by kind and width
so a graph of thousands of edges stays a handful of traces.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from explorer.analyse.routes import RouteGraph, RouteNode
from explorer.views.figures.axes import title_below_toolbar
from explorer.views.figures.internals import CLICK_MARKER, f32, labels, plotly_label, plotly_text

EDGE_COLORS = {"attention": "#4C78A8", "residual": "#9AA5B1", "mlp": "#F58518"}
NODE_COLORS = {"res": "#4C78A8", "mid": "#72B7B2", "mlp": "#F58518"}
WIDTH_BINS = (0.0, 0.1, 0.2, 0.4, 0.7)
EDGE, NODE = 0, 1
SELF_BEND = 0.18
ALONG = 0.618


def node_xy(node: RouteNode) -> tuple[float, float]:
    if node.kind == "res":
        return float(node.position), float(node.layer)
    if node.kind == "mid":
        return float(node.position), node.layer + 0.5
    return node.position + 1 / 3, node.layer + 0.75


def routes_figure(graph: RouteGraph, selected: tuple[int, int] | None = None) -> go.Figure:
    """`selected` = (EDGE | NODE, index) is drawn highlighted."""
    xy = {n.id: node_xy(n) for n in graph.nodes}
    traces: list[go.Scatter] = []
    for kind, color in EDGE_COLORS.items():
        for b, low in enumerate(WIDTH_BINS):
            high = WIDTH_BINS[b + 1] if b + 1 < len(WIDTH_BINS) else 1.01
            xs: list[float | None] = []
            ys: list[float | None] = []
            for e in graph.edges:
                if e.kind == kind and low <= e.importance < high:
                    (x0, y0), (x1, y1) = xy[e.source], xy[e.target]
                    xm, ym = _middle(e, xy)
                    xs += [x0, xm, x1, None]
                    ys += [y0, ym, y1, None]
            if xs:
                traces.append(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=b == 0,
                                         name=kind, legendgroup=kind,
                                         line=dict(color=color, width=1 + 2.5 * b), opacity=0.75))
    if graph.edges:
        # attention edges first: the markers' order is free (customdata names the edge), and the
        # edges a reader most wants to open come first for keyboard and test alike
        order = sorted(range(len(graph.edges)), key=lambda i: graph.edges[i].kind != "attention")
        mids = np.array([_middle(graph.edges[i], xy) for i in order])
        hover = [_edge_text(graph, graph.edges[i]) for i in order]
        traces.append(go.Scatter(x=f32(mids[:, 0]), y=f32(mids[:, 1]), mode="markers", hovertext=labels(hover),
                                 hoverinfo="text", showlegend=False, name="edges",
                                 customdata=np.stack([np.zeros(len(order)), order], 1).astype(np.int32),
                                 marker=dict(size=9, color=CLICK_MARKER)))
    nxy = np.array([xy[n.id] for n in graph.nodes])
    traces.append(go.Scatter(
        x=f32(nxy[:, 0]), y=f32(nxy[:, 1]), mode="markers", name="nodes", showlegend=False, hoverinfo="text",
        hovertext=labels([_node_text(graph, n) for n in graph.nodes]),
        customdata=np.stack([np.ones(len(graph.nodes)), np.arange(len(graph.nodes))], 1).astype(np.int32),
        marker=dict(size=f32([9 if n.kind == "res" else 7 for n in graph.nodes]),
                    symbol=labels(["circle" if n.kind != "mlp" else "square" for n in graph.nodes]),
                    color=labels([NODE_COLORS[n.kind] for n in graph.nodes]), line=dict(width=1, color="white"))))
    if selected is not None:
        traces.append(_highlight(graph, xy, selected))
    positions = sorted({n.position for n in graph.nodes})
    ticks = positions if len(positions) <= 40 else positions[:: int(np.ceil(len(positions) / 40))]
    lay = dict(
        title=dict(text=f"Information-flow routes into position {graph.position} "
                        f"(“{plotly_label(graph.tokens[graph.position], 16)}”) · edges over {graph.threshold:.2f}",
                   font=dict(size=14)),
        height=int(min(1100, max(420, 26 * graph.num_layers + 160))), margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(title=dict(text="token"), tickvals=f32(ticks), tickangle=-60, tickfont=dict(size=10),
                   ticktext=labels([f"{p} {plotly_text(graph.tokens[p])}" for p in ticks]), zeroline=False),
        yaxis=dict(title=dict(text="layer"), range=[-0.6, graph.num_layers + 0.6], zeroline=False),
        # top left inside the plot: routes rarely reach the top layers of early tokens, and the
        # modebar owns the top right (a legend there ran into it)
        legend=dict(orientation="h", y=0.995, x=0.005, xanchor="left", yanchor="top",
                    bgcolor="rgba(255,255,255,0.85)"),
        clickmode="event+select", uirevision="keep", hovermode="closest")
    return go.Figure(data=traces, layout=title_below_toolbar(lay))


def _middle(e, xy: dict) -> tuple[float, float]:
    """Where an edge's click marker (and the bend of its line) sits. Attention edges put it a
    golden-ratio share of the way to the target, so edges between different token pairs never
    share a marker (halfway, 8→10 and 7→11 would); a token attending to itself bends left, so it
    does not hide under the residual edge between the same two nodes."""
    (x0, y0), (x1, y1) = xy[e.source], xy[e.target]
    if e.kind != "attention":
        return (x0 + x1) / 2, (y0 + y1) / 2
    bend = SELF_BEND if x0 == x1 else 0.0
    return x0 + ALONG * (x1 - x0) - bend, y0 + ALONG * (y1 - y0)


def _edge_text(graph: RouteGraph, e) -> str:
    src, dst = graph.node(e.source), graph.node(e.target)
    text = (f"{e.kind} edge, layer {e.layer}: token {src.position} "
            f"“{plotly_text(graph.tokens[src.position])}” → {dst.position}<br>importance {e.importance:.2f}")
    if e.heads:
        text += "<br>" + ", ".join(f"head {h} {s:.2f}" for h, s in e.heads[:4])
    return text


def _node_text(graph: RouteGraph, n: RouteNode) -> str:
    where = {"res": f"residual entering layer {n.layer}" if n.layer < graph.num_layers else "final residual",
             "mid": f"after layer {n.layer}'s attention", "mlp": f"layer {n.layer}'s MLP"}[n.kind]
    return f"{where}<br>token {n.position} “{plotly_text(graph.tokens[n.position])}”"


def _highlight(graph: RouteGraph, xy: dict, selected: tuple[int, int]) -> go.Scatter:
    kind, index = selected
    if kind == EDGE and 0 <= index < len(graph.edges):
        e = graph.edges[index]
        (x0, y0), (x1, y1) = xy[e.source], xy[e.target]
        xm, ym = _middle(e, xy)
        return go.Scatter(x=[x0, xm, x1], y=[y0, ym, y1], mode="lines", hoverinfo="skip", showlegend=False,
                          line=dict(color="#E45756", width=5))
    if kind == NODE and 0 <= index < len(graph.nodes):
        x, y = xy[graph.nodes[index].id]
        return go.Scatter(x=[x], y=[y], mode="markers", hoverinfo="skip", showlegend=False,
                          marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="#E45756", width=3)))
    return go.Scatter(x=[], y=[], showlegend=False)


__all__ = ["EDGE", "NODE", "node_xy", "routes_figure"]
