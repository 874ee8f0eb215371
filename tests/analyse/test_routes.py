"""Information-flow routes: the per-token attention parts rebuild the attention output, the graph
keeps exactly the edges over the threshold and is connected to the chosen position."""
from __future__ import annotations

import json

import pytest
import torch

from explorer.analyse.attribution import attention_bias, attention_total
from explorer.analyse.routes import attention_rows_from_store, build_routes, node_id, proximity, query_scale, value_parts
from explorer.record.capture import PARTS, CaptureOptions, capture
from tests.tiny_models import tiny_model, with_random_biases


@pytest.fixture(scope="module", params=["llama", "gemma2", "gpt2"])
def cap(request):
    model = with_random_biases(tiny_model(request.param))
    ids = torch.randint(3, 250, (24,), generator=torch.Generator().manual_seed(5))
    return capture(model, None, ids, CaptureOptions(parts=PARTS))


def test_proximity_is_l1_closeness_clamped_at_zero():
    y = torch.tensor([1.0, 1.0])
    assert float(proximity(torch.tensor([1.0, 1.0]), y)) == 2.0      # the whole of y
    assert float(proximity(torch.tensor([0.0, 0.0]), y)) == 0.0
    assert float(proximity(torch.tensor([-3.0, 0.0]), y)) == 0.0     # points away: clamped


def test_token_parts_rebuild_each_positions_attention_output(cap):
    comp, rows = cap.components, attention_rows_from_store(cap.attention)
    for layer in range(comp.num_layers):
        positions = torch.arange(comp.resid.shape[1])
        a = rows(layer, positions)                                                 # (H, T, T)
        u = value_parts(comp, layer, positions)                                    # (H, T, d)
        per_token = torch.einsum("hqj,hjd->qd", a, u) * query_scale(comp, layer, positions)[:, None]
        torch.testing.assert_close(per_token + attention_bias(comp, layer), attention_total(comp, layer),
                                   atol=1e-5, rtol=1e-4)


def test_graph_keeps_only_edges_over_the_threshold_and_reaches_the_top(cap):
    graph = build_routes(cap.components, attention_rows_from_store(cap.attention), -1, threshold=0.05)
    top = node_id("res", cap.num_layers, cap.num_tokens - 1)
    ids = {n.id for n in graph.nodes}
    assert top in ids
    assert all(e.importance > 0.05 for e in graph.edges)
    assert all(e.source in ids and e.target in ids for e in graph.edges)
    sources = {e.source for e in graph.edges}
    assert all(n.id in sources for n in graph.nodes if n.id != top), "every node feeds the graph"
    for e in graph.edges:
        if e.kind == "attention":
            assert e.heads and sum(s for _, s in e.heads) >= e.importance * 0.5
            assert [s for _, s in e.heads] == sorted((s for _, s in e.heads), reverse=True)


def test_lower_threshold_keeps_a_superset(cap):
    rows = attention_rows_from_store(cap.attention)
    high = build_routes(cap.components, rows, 10, threshold=0.2)
    low = build_routes(cap.components, rows, 10, threshold=0.02)
    key = lambda e: (e.source, e.target, e.kind)  # noqa: E731 - a sort key, named
    assert {key(e) for e in high.edges} <= {key(e) for e in low.edges}
    assert len(low.edges) > len(high.edges)


def test_importances_into_a_node_are_shares_of_one(cap):
    graph = build_routes(cap.components, attention_rows_from_store(cap.attention), -1, threshold=0.0)
    into: dict[str, float] = {}
    for e in graph.edges:
        if not (e.kind == "mlp" and e.target.startswith("mlp")):
            into[e.target] = into.get(e.target, 0.0) + e.importance
    assert max(into.values()) <= 1 + 1e-5
    assert min(into.values()) > 0.5


def test_graph_serialises_to_json(cap):
    graph = build_routes(cap.components, attention_rows_from_store(cap.attention), 5, threshold=0.05)
    data = json.loads(json.dumps(graph.to_dict()))
    assert data["position"] == 5 and len(data["edges"]) == len(graph.edges)


def test_fast_graph_equals_the_exact_one(cap):
    rows = attention_rows_from_store(cap.attention)
    for threshold in (0.02, 0.05):
        fast = build_routes(cap.components, rows, -1, threshold)
        exact = build_routes(cap.components, rows, -1, threshold, exact=True)
        key = lambda e: (e.source, e.target, e.kind)  # noqa: E731 - a sort key, named
        assert {key(e) for e in fast.edges} == {key(e) for e in exact.edges}
        by_key = {key(e): e.importance for e in exact.edges}
        assert max(abs(e.importance - by_key[key(e)]) for e in fast.edges) < 0.02
