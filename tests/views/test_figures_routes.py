"""Routes and attribution figures: every edge and node is clickable with an id that finds it back,
the heatmap is signed around zero, and token text in labels stays text."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.routes import attention_rows_from_store, build_routes
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.views.figures.attribution import attribution_heatmap, ranked_table
from explorer.views.figures.routes import ALONG, EDGE, NODE, SELF_BEND, node_xy, routes_figure
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def cap():
    return capture(tiny_model("llama"), None, torch.randint(3, 250, (16,), generator=torch.Generator().manual_seed(2)),
                   CaptureOptions(parts=PARTS))


def test_every_edge_and_node_has_a_click_marker_that_names_it(cap):
    graph = build_routes(cap.components, attention_rows_from_store(cap.attention), -1, 0.03)
    graph.tokens = ["<b>x</b>"] * len(graph.tokens)
    fig = routes_figure(graph)
    edges = next(t for t in fig.data if t.name == "edges")
    nodes = next(t for t in fig.data if t.name == "nodes")
    custom = [tuple(c) for c in np.asarray(edges.customdata)]
    assert sorted(custom) == [(EDGE, i) for i in range(len(graph.edges))]
    assert [tuple(c) for c in np.asarray(nodes.customdata)] == [(NODE, i) for i in range(len(graph.nodes))]
    kinds = [graph.edges[i].kind for _, i in custom]
    assert kinds == sorted(kinds, key=lambda k: k != "attention")      # attention edges first
    for point, (_, i) in enumerate(custom):     # the marker sits between its edge's two nodes
        e = graph.edges[i]
        (x0, y0), (x1, y1) = node_xy(graph.node(e.source)), node_xy(graph.node(e.target))
        t = ALONG if e.kind == "attention" else 0.5
        bend = SELF_BEND if e.kind == "attention" and x0 == x1 else 0.0
        expected = (x0 + t * (x1 - x0) - bend, y0 + t * (y1 - y0))
        assert np.allclose((edges.x[point], edges.y[point]), expected, atol=1e-5)
    markers = {(round(float(x), 4), round(float(y), 4)) for x, y in zip(edges.x, edges.y)}
    assert len(markers) == len(graph.edges), "two edges share a click marker"
    assert all("<b>" not in str(t) for t in fig.layout.xaxis.ticktext)


def test_selected_edge_is_highlighted(cap):
    graph = build_routes(cap.components, attention_rows_from_store(cap.attention), -1, 0.03)
    plain, marked = routes_figure(graph), routes_figure(graph, (EDGE, 0))
    assert len(marked.data) == len(plain.data) + 1


def test_attribution_heatmap_is_signed_and_centred(cap):
    att = direct_logit_attribution(cap.components)
    fig = attribution_heatmap(att, " Paris", "15 ␣is")
    heads, mlp = fig.data[0], fig.data[1]
    assert heads.zmid == 0 and heads.zmin == -heads.zmax
    assert np.asarray(heads.z).shape == (cap.num_layers, cap.num_heads) and np.asarray(mlp.z).shape == (cap.num_layers, 1)
    rows = ranked_table(att, 5)
    assert len(rows) == 5 and abs(rows[0]["contribution"]) >= abs(rows[-1]["contribution"])
