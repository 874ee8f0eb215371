"""Figures: the hierarchy is consistent and small, the data flow readable, the charts complete."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer.analyse.architecture import describe_config, describe_model, model_from_config
from explorer.analyse.data_flow import data_flow
from explorer.analyse.memory_estimate import estimate_all
from explorer.model.configs import preset_config
from explorer.views.figures.architecture import ROOT_ID, breakdown_figure, dataflow_figure, hierarchy_figure, memory_figure
from tests.tiny_models import tiny_model

MAX_PAYLOAD = 2 * 1024**2


@pytest.fixture(scope="module")
def llama8b():
    return describe_config(preset_config("llama-3.1-8b-instruct"), "Llama 3.1 8B")


@pytest.mark.parametrize("kind", ["icicle", "treemap"])
def test_hierarchy_values_are_consistent_and_the_payload_small(kind, llama8b):
    fig = hierarchy_figure(llama8b.graph, kind)
    trace = fig.data[0]
    assert trace.type == kind and trace.branchvalues == "total" and trace.pathbar.visible
    ids, parents, values = list(trace.ids), list(trace.parents), np.asarray(trace.values)
    assert ids[0] == ROOT_ID and parents[0] == "" and values[0] == 8_030_261_248
    index = {i: k for k, i in enumerate(ids)}
    children = np.zeros(len(ids))
    for parent, value in zip(parents[1:], values[1:]):
        children[index[parent]] += value
    assert np.all(values + 1e-6 >= children), "plotly drops a parent smaller than its children"
    assert len(fig.to_json()) < MAX_PAYLOAD


def test_hierarchy_sized_by_bytes_totals_the_model_bytes(llama8b):
    trace = hierarchy_figure(llama8b.graph, size_by="bytes").data[0]
    assert trace.values[0] == llama8b.total_bytes


def test_dataflow_points_map_back_to_flow_nodes():
    view = describe_model(tiny_model("gemma2"), "g")
    flow = data_flow(view.anatomy, 1)
    fig = dataflow_figure(flow, selected="model.layers.1.mlp")
    nodes = fig.data[2]
    assert len(nodes.x) == len(flow.nodes)
    assert [c[0] for c in nodes.customdata] == [n.module or "" for n in flow.nodes]
    assert max(nodes.marker.line.width) == 4  # the selected block is outlined
    assert json.loads(fig.to_json())["data"][2]["x"]["dtype"] == "f4"


def test_dataflow_payload_does_not_grow_with_depth(llama8b):
    small = describe_model(tiny_model("llama"), "x")
    a = len(dataflow_figure(data_flow(small.anatomy, 1)).to_json())
    b = len(dataflow_figure(data_flow(llama8b.anatomy, 1)).to_json())
    assert abs(a - b) < 2000


def test_breakdown_figure_shows_every_part_and_marks_a_tied_head():
    view = describe_config(preset_config("gemma-2-2b-it"), "g")
    fig = breakdown_figure(view.breakdown)
    assert "LM head (tied)" in fig.data[0].y
    assert sum(fig.data[0].x) == view.total_params


def test_memory_figure_draws_each_precision_and_gpu_lines():
    est = estimate_all(model_from_config(preset_config("llama-3.1-8b-instruct")))
    fig = memory_figure(est, extra_gib=1.5)
    assert list(fig.data[0].x) == [e.label for e in est]
    assert len(fig.data) == 2  # weights, then KV cache + runtime stacked on top
    labels = [a.text for a in fig.layout.annotations]
    assert any("40 GB" in t for t in labels) and any("16 GB" in t for t in labels)
    assert not any("80 GB" in t for t in labels), "lines far above the tallest bar only squash the bars"
    assert len(fig.to_json()) < MAX_PAYLOAD


def test_figures_are_plain_plotly_figures(llama8b):
    for fig in (hierarchy_figure(llama8b.graph), dataflow_figure(data_flow(llama8b.anatomy)),
                breakdown_figure(llama8b.breakdown)):
        assert isinstance(fig, go.Figure)
