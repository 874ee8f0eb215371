"""Information-flow routes (Ferrando & Voita, 2024): which tokens, heads and MLPs carried the
information that ends in one position's prediction, as a graph over (layer, token) nodes.

Every block writes a sum of parts into the residual stream, so each part can be scored by how
close it is to the block's result. With y = Σ_k z_k the result and z_k its parts, this module uses
the paper's proximity-based contribution (from ALTI, Ferrando et al. 2022):

    proximity(z_k, y) = max(0, ‖y‖₁ − ‖y − z_k‖₁)
    importance(z_k, y) = proximity(z_k, y) / Σ_m proximity(z_m, y)

Attention block of layer l at position i: y = mid[l, i] (the residual after attention), parts
  - the residual edge x[l, i] (the stream passing by),
  - one attention edge per earlier token j: f_ij = Σ_h A_h[i, j] · N_i(v_h[j] W_O^h),
    where A_h is head h's attention, v_h[j] its value at j, W_O^h its slice of the output
    projection and N_i a norm between attention and residual linearised at i (identity for most),
  - the attention bias (never an edge, but it takes its share of the denominator).
MLP block of layer l at position i: y = x[l + 1, i], parts the residual mid[l, i], the MLP's output
and any remainder. The heads carrying an attention edge are scored the same way with their own
part A_h[i, j] · N_i(v_h[j] W_O^h) and the edge's denominator.

Models whose attention and MLP both read x[l] (GPT-J, Falcon's parallel blocks) are drawn the
same way: mid[l, i] is then a sum rather than the MLP's input, an approximation the graph accepts.

Computed where the components are (a GPU when the capture kept them there; the attention rows
are moved to them). The graph is built top-down from x[L, position]: a node's incoming edges with importance above
`threshold` are kept, and their sources join the graph. Only positions already in the graph are
ever computed, so a sparse graph over a long prompt stays cheap.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from explorer.analyse import attention as attention_maths
from explorer.analyse.attribution import attention_bias, attention_total
from explorer.record import mask_rule
from explorer.record.components import Components

DEFAULT_THRESHOLD = 0.04

AttentionRows = Callable[[int, torch.Tensor], torch.Tensor]
"""(layer, positions (P,)) -> (H, P, T) float32 attention probabilities of those query positions
(on any device: build_routes moves them to the components')."""


@dataclass
class RouteNode:
    id: str
    kind: str        # "res": residual entering layer `layer` (layer L: after the last one);
                     # "mid": after layer `layer`'s attention; "mlp": layer `layer`'s MLP
    layer: int
    position: int


@dataclass
class RouteEdge:
    source: str
    target: str
    kind: str                     # "attention" | "residual" | "mlp"
    layer: int
    importance: float             # share of the target's proximity mass, in [0, 1]
    heads: list[tuple[int, float]] = field(default_factory=list)   # attention: (head, importance), largest first


@dataclass
class RouteGraph:
    """Plain data for the figure, the CLI and JSON."""
    position: int
    threshold: float
    num_layers: int
    tokens: list[str]
    nodes: list[RouteNode]
    edges: list[RouteEdge]

    def node(self, node_id: str) -> RouteNode:
        return next(n for n in self.nodes if n.id == node_id)

    def to_dict(self) -> dict:
        return {"position": self.position, "threshold": self.threshold, "num_layers": self.num_layers,
                "tokens": self.tokens, "nodes": [asdict(n) for n in self.nodes],
                "edges": [{**asdict(e), "heads": [list(h) for h in e.heads]} for e in self.edges]}


def node_id(kind: str, layer: int, position: int) -> str:
    return f"{kind}:{layer}:{position}"


def proximity(parts: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(0, ‖y‖₁ − ‖y − z‖₁) for parts (..., d) against y broadcastable to them."""
    return (y.abs().sum(-1) - (y - parts).abs().sum(-1)).clamp_min(0)


def attention_rows_from_store(store) -> AttentionRows:
    """Adapter: query rows of a capture's AttentionStore, computed over runs of nearby positions
    only (the graph reaches few of a long prompt's rows)."""
    def rows(layer: int, positions: torch.Tensor) -> torch.Tensor:
        prep = attention_maths.layer_rows(store, layer)
        rec = prep.rec
        if prep.fusable() and rec.causal and rec.sliding_window is None:
            q = prep.q[:, positions].float()                                        # (H, P, D)
            k = prep.k.repeat_interleave(prep.groups, 0) if prep.groups > 1 else prep.k
            scores = torch.matmul(q, k.transpose(1, 2)) * rec.scaling               # (H, P, T)
            offset = k.shape[1] - prep.q.shape[1]
            allowed = mask_rule.allowed_keys(positions.to(k.device) + offset,
                                             torch.arange(k.shape[1], device=k.device), True, None)   # (P, T)
            return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)             # on prep's device
        pos = positions.tolist()
        out = torch.empty(store.num_heads, len(pos), prep.t_k)
        start = 0
        for end in range(1, len(pos) + 1):
            if end == len(pos) or pos[end] - pos[end - 1] > 4:
                r0, r1 = pos[start], pos[end - 1] + 1
                probs, _ = prep.block(r0, r1, trim_keys=False)                     # (H, r1 - r0, T)
                out[:, start:end] = probs.float().cpu()[:, torch.tensor(pos[start:end]) - r0]
                start = end
        return out
    return rows


class _Floats:
    """One layer's weights and values in float32, converted once per layer."""

    def __init__(self, comp: Components, layer: int):
        self.w_o = comp.w_o[layer].float()                                           # (H, hd, d)
        self.values = comp.values[layer].float()[comp.kv_head_of]                    # (H, T, hd)


def value_parts(comp: Components, layer: int, sources: torch.Tensor, floats: _Floats | None = None) -> torch.Tensor:
    """(H, J, d) float32: head h's value at each source token through its slice of the output
    projection and the gain ⊙ P(·) of a post-attention norm (its per-query scale not applied)."""
    floats = floats or _Floats(comp, layer)
    u = torch.einsum("hjk,hkd->hjd", floats.values[:, sources], floats.w_o)          # (H, J, d)
    post = comp.attn_post_norm[layer]
    if post is not None:
        if post.center:
            u = u - u.mean(-1, keepdim=True)
        u = u * post.gain
    return u


def query_scale(comp: Components, layer: int, positions: torch.Tensor) -> torch.Tensor:
    """(P,) the post-attention norm's scale at each query position (ones without such a norm)."""
    post = comp.attn_post_norm[layer]
    return post.scale[positions] if post is not None else torch.ones(len(positions), device=comp.resid.device)


def _mlp_block(comp: Components, layer: int, positions: torch.Tensor, mid: torch.Tensor):
    """Importance of (residual mid, MLP) for y = x[l+1] at `positions`: two (P,) tensors."""
    y = comp.resid[layer + 1, positions].float()                                     # (P, d)
    mlp = comp.mlp[layer, positions].float()
    rest = y - mid - mlp
    prox = torch.stack([proximity(mid, y), proximity(mlp, y), proximity(rest, y)])   # (3, P)
    share = prox / prox.sum(0).clamp_min(1e-30)
    return share[0], share[1]


def _first_order(comp: Components, layer: int, a: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
                 floats: _Floats) -> torch.Tensor:
    """(P, J) max(0, sign(y_i) · f_ij) for every source token, without forming any f_ij:
    sign(y)·(v W_O^h) = v · (W_O^h sign(y)), so it costs P·H·hd·(d + J) instead of P·J·d."""
    r = torch.sign(y) * scale[:, None]                                               # (P, d)
    post = comp.attn_post_norm[layer]
    if post is not None:
        r = r * post.gain
        r = r - r.mean(-1, keepdim=True) if post.center else r
    w = torch.einsum("pd,hkd->hpk", r, floats.w_o)                                  # (H, P, hd)
    v = floats.values[:, : a.shape[-1]]                                              # (H, J, hd)
    return (a * torch.bmm(w, v.transpose(1, 2))).sum(0).clamp_min(0)                  # (P, J)


def _attention_block(comp: Components, layer: int, positions: torch.Tensor, mid: torch.Tensor,
                     rows: AttentionRows, threshold: float, exact: bool):
    """For each query position: the residual edge's importance, each source token's importance
    (P, J), and what the heads of an edge need: (A (H, P, J), U (H, |sources|, d), source index, D)."""
    x = comp.resid[layer, positions].float()                                         # (P, d)
    bias = attention_bias(comp, layer, positions)
    a = rows(layer, positions)[..., : int(positions.max()) + 1].to(x.device)         # (H, P, J)
    scale = query_scale(comp, layer, positions)
    p_fixed = proximity(x, mid) + proximity(bias, mid)                               # (P,)
    floats = _Floats(comp, layer)
    lin = _first_order(comp, layer, a, mid, scale, floats)                           # (P, J) ≥ exact
    cand = lin > 0 if exact else lin > 0.1 * threshold * (p_fixed + lin.sum(-1))[:, None]
    for _ in range(2):                  # second pass: anything the exact denominator could let through
        sources = cand.any(0).nonzero().flatten()
        u = value_parts(comp, layer, sources, floats)                                # (H, S, d)
        pi, ji = cand.nonzero(as_tuple=True)
        col = torch.searchsorted(sources, ji)
        f = torch.einsum("hn,hnd->nd", a[:, pi, ji], u[:, col]) * scale[pi, None]    # (pairs, d)
        exact_p = torch.zeros_like(lin)
        exact_p[pi, ji] = proximity(f, mid[pi])
        low = p_fixed + exact_p.sum(-1)
        missed = ~cand & (lin > threshold * low[:, None])
        if not missed.any():
            break
        cand = cand | missed
    prox = torch.where(cand, exact_p, lin)
    total = (p_fixed + prox.sum(-1)).clamp_min(1e-30)
    res_share = proximity(x, mid) / total
    return res_share, prox / total[:, None], (a, u, sources, total, scale)


def _head_shares(parts, k: int, j: int, y: torch.Tensor) -> list[tuple[int, float]]:
    a, u, sources, total, scale = parts
    col = int(torch.searchsorted(sources, torch.tensor(j, device=sources.device)))
    head_parts = a[:, k, j, None] * u[:, col] * scale[k]                              # (H, d)
    share = proximity(head_parts, y[None]) / total[k]
    order = torch.argsort(share, descending=True)
    return [(int(h), float(share[h])) for h in order if share[h] > 0]


def build_routes(comp: Components, rows: AttentionRows, position: int = -1,
                 threshold: float = DEFAULT_THRESHOLD, tokens: list[str] | None = None,
                 exact: bool = False) -> RouteGraph:
    """The routes graph ending at `position` (see the module docstring for the formula).

    exact=False computes the proximity of every part that could reach the threshold exactly, and
    of the many small ones by its first-order value max(0, sign(y)·z): an upper bound, exact
    while |z_k| ≤ |y_k| in every coordinate, which only enters the denominator. A part left to
    first order never has an importance over the threshold (checked), so the edges kept are the
    ones exact=True keeps, up to that denominator's first-order error.
    """
    if comp.values is None:
        raise LookupError("this capture has no attention values; routes need a model that runs "
                          "through transformers' attention interface")
    t = int(comp.resid.shape[1])
    position = position % t
    n_layers = comp.num_layers
    nodes: dict[str, RouteNode] = {}
    edges: list[RouteEdge] = []

    def add(kind: str, layer: int, pos: int) -> str:
        nid = node_id(kind, layer, pos)
        nodes.setdefault(nid, RouteNode(nid, kind, layer, pos))
        return nid

    active = {position}
    add("res", n_layers, position)
    for layer in range(n_layers - 1, -1, -1):
        if not active:
            break
        positions = torch.tensor(sorted(active))
        mid = comp.resid[layer, positions].float() + attention_total(comp, layer, positions)   # (P, d)
        res_share, mlp_share = _mlp_block(comp, layer, positions, mid)
        mid_active: list[int] = []
        for k, p in enumerate(positions.tolist()):
            out = node_id("res", layer + 1, p)
            if mlp_share[k] > threshold:
                add("mlp", layer, p)
                edges.append(RouteEdge(node_id("mlp", layer, p), out, "mlp", layer, float(mlp_share[k])))
                edges.append(RouteEdge(node_id("mid", layer, p), node_id("mlp", layer, p), "mlp", layer,
                                       float(mlp_share[k])))
            if res_share[k] > threshold:
                edges.append(RouteEdge(node_id("mid", layer, p), out, "residual", layer, float(res_share[k])))
            if mlp_share[k] > threshold or res_share[k] > threshold:
                add("mid", layer, p)
                mid_active.append(k)
        active = set()
        if not mid_active:
            continue
        sel = torch.tensor(mid_active)
        positions, mid = positions[sel], mid[sel]
        res_share, token_share, parts = _attention_block(comp, layer, positions, mid, rows, threshold, exact)
        for k, p in enumerate(positions.tolist()):
            target = node_id("mid", layer, p)
            if res_share[k] > threshold:
                add("res", layer, p)
                edges.append(RouteEdge(node_id("res", layer, p), target, "residual", layer, float(res_share[k])))
                active.add(p)
            for j in (token_share[k] > threshold).nonzero().flatten().tolist():
                add("res", layer, j)
                heads = _head_shares(parts, k, j, mid[k])
                edges.append(RouteEdge(node_id("res", layer, j), target, "attention", layer,
                                       float(token_share[k, j]), heads))
                active.add(j)
    toks = tokens if tokens is not None else [str(i) for i in range(t)]
    return RouteGraph(position, threshold, n_layers, list(toks), list(nodes.values()), edges)


__all__ = ["AttentionRows", "DEFAULT_THRESHOLD", "RouteEdge", "RouteGraph", "RouteNode", "attention_rows_from_store",
           "build_routes", "node_id", "node_vector", "proximity", "query_scale", "value_parts"]


def node_vector(comp: Components, node: RouteNode) -> torch.Tensor:
    """(d,) float32 residual-stream state a node stands for (an MLP node: the stream after its layer)."""
    if node.kind == "res":
        return comp.resid[node.layer, node.position].float().cpu()
    if node.kind == "mid":
        pos = torch.tensor([node.position])
        return (comp.resid[node.layer, node.position].float() + attention_total(comp, node.layer, pos)[0]).cpu()
    return comp.resid[node.layer + 1, node.position].float().cpu()
