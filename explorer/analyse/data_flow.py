"""The data-flow diagram of a decoder: the residual stream, with attention and MLP branching off it.

Why from the anatomy alone: the diagram shows where norms sit (pre, post, both) and which
layers are folded, which needs no weights; the module roles and texts are shared with the
module tree (explorer.analyse.module_roles).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from explorer.analyse.module_roles import NORM_TEXT, ROLE_TEXT, norm_placements
from explorer.model.anatomy import Anatomy, LayerParts


@dataclass
class FlowNode:
    id: str
    kind: str              # embed | positions | add | norm | attention | mlp | folded | head
    label: str
    module: str | None     # qualified module name, when the node is one module
    explain: str
    x: float = 0.0
    y: float = 0.0        # 0 = the residual stream; 1 = a branch that reads from and adds back to it
    span: tuple[int, int] | None = None  # first and last layer index, for folded blocks


@dataclass
class DataFlow:
    nodes: list[FlowNode]
    edges: list[tuple[str, str, str]]  # (source id, target id, "stream" | "branch")
    num_layers: int
    expanded: int | None
    missing: list[str] = field(default_factory=list)


def _fold(first: int, last: int, name: str) -> FlowNode:
    count = last - first + 1
    label = f"layer {first}" if count == 1 else f"layers {first}–{last}<br>× {count}"
    return FlowNode(id=f"fold:{first}-{last}", kind="folded", label=label, module=name if count == 1 else None,
                    explain=f"{count} decoder layer{'s' * (count > 1)}, folded: each is norm → attention → add → "
                            "norm → MLP → add. Click to unfold.", span=(first, last))


def _layer_nodes(layer: LayerParts) -> tuple[list[FlowNode], list[tuple[str, str, str]], str]:
    """One unfolded layer: branches up to y=1 for attention and MLP, adds on the stream at y=0."""
    places = norm_placements(layer)
    by_place = {p: n for n, p in places.items()}
    i = layer.index
    nodes: list[FlowNode] = []
    edges: list[tuple[str, str, str]] = []
    entry = f"L{i}:in"
    nodes.append(FlowNode(entry, "stream", f"layer {i}", layer.name, ROLE_TEXT["layer"]))

    def branch(start: str, parts: list[tuple[str, str, str | None, str, str]], add_id: str) -> str:
        prev = start
        for key, kind, module, label, text in parts:
            if module is None:
                continue
            node_id = f"L{i}:{key}"
            nodes.append(FlowNode(node_id, kind, label, module, text, y=1.0))
            edges.append((prev, node_id, "branch"))
            prev = node_id
        nodes.append(FlowNode(add_id, "add", "+", None, "Residual add: the branch's output is added to the stream, "
                                                           "so each block only writes a correction."))
        edges.append((prev, add_id, "branch"))
        edges.append((start, add_id, "stream"))
        return add_id

    attn_parts = [("pre_attention", "norm", by_place.get("pre_attention"), "norm", NORM_TEXT["pre_attention"]),
                  ("attention", "attention", layer.attention, "attention", ROLE_TEXT["attention"]),
                  ("post_attention", "norm", by_place.get("post_attention"), "post-norm", NORM_TEXT["post_attention"])]
    mid = branch(entry, attn_parts, f"L{i}:add1")
    mlp_parts = [("pre_mlp", "norm", by_place.get("pre_mlp"), "norm", NORM_TEXT["pre_mlp"]),
                 ("mlp", "mlp", layer.mlp, "MLP", ROLE_TEXT["mlp"]),
                 ("post_mlp", "norm", by_place.get("post_mlp"), "post-norm", NORM_TEXT["post_mlp"])]
    out = branch(mid, mlp_parts, f"L{i}:add2")
    return nodes, edges, out


def data_flow(anatomy: Anatomy, expanded: int | None = 0) -> DataFlow:
    """Embedding → layers (folded except `expanded`) → final norm → LM head, with residual adds.

    Folding keeps the drawing the same size for 2 or 80 layers; the unfolded layer shows the
    pre-norm residual pattern every decoder layer repeats.
    """
    nodes: list[FlowNode] = []
    edges: list[tuple[str, str, str]] = []
    n = len(anatomy.layers)
    if expanded is not None and not 0 <= expanded < n:
        expanded = None
    prev = None
    if anatomy.embed_tokens:
        nodes.append(FlowNode("embed", "embed", "token<br>embedding", anatomy.embed_tokens, ROLE_TEXT["embeddings"]))
        prev = "embed"
    if anatomy.embed_positions:
        nodes.append(FlowNode("pos", "positions", "position<br>embedding", anatomy.embed_positions,
                              ROLE_TEXT["positions"], y=1.0))
        nodes.append(FlowNode("embed:add", "add", "+", None, "Token and position vectors are summed."))
        if prev:
            edges.append((prev, "embed:add", "stream"))
        edges.append(("pos", "embed:add", "branch"))
        prev = "embed:add"

    def link(node_id: str) -> None:
        nonlocal prev
        if prev is not None:
            edges.append((prev, node_id, "stream"))
        prev = node_id

    if n:
        if expanded is None:
            fold = _fold(0, n - 1, anatomy.layers[0].name)
            nodes.append(fold)
            link(fold.id)
        else:
            if expanded > 0:
                fold = _fold(0, expanded - 1, anatomy.layers[0].name)
                nodes.append(fold)
                link(fold.id)
            layer_nodes, layer_edges, out = _layer_nodes(anatomy.layers[expanded])
            link(layer_nodes[0].id)
            nodes += layer_nodes
            edges += layer_edges
            prev = out
            if expanded < n - 1:
                fold = _fold(expanded + 1, n - 1, anatomy.layers[expanded + 1].name)
                nodes.append(fold)
                link(fold.id)
    if anatomy.final_norm:
        nodes.append(FlowNode("final_norm", "norm", "final<br>norm", anatomy.final_norm, ROLE_TEXT["final_norm"]))
        link("final_norm")
    if anatomy.lm_head:
        nodes.append(FlowNode("head", "head", "LM head", anatomy.lm_head, ROLE_TEXT["lm_head"]))
        link("head")
    _layout(nodes, edges)
    return DataFlow(nodes, edges, n, expanded, list(anatomy.missing))


def _layout(nodes: list[FlowNode], edges: list[tuple[str, str, str]]) -> None:
    """Left to right in topological order; branch nodes sit above the stream, one column each."""
    flow = nx.DiGraph()
    flow.add_nodes_from(n.id for n in nodes)
    flow.add_edges_from((a, b) for a, b, _ in edges)
    x = {}
    for node_id in nx.topological_sort(flow):
        preds = list(flow.predecessors(node_id))
        x[node_id] = max((x[p] + 1 for p in preds), default=0)
    for node in nodes:
        node.x = float(x[node.id])


__all__ = ["DataFlow", "FlowNode", "data_flow"]
