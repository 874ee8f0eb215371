"""The module tree of a causal LM as a networkx graph: counts, shapes, quantization, bytes, roles.

Why a graph and not `print(model)`: the same tree feeds the icicle, the module table, the
parameter breakdown and the memory estimate, and it can be built from a config alone on the
meta device, so a laptop can open an 8B model without its weights.

Two counting traps this module exists to avoid:
- bitsandbytes 4-bit weights (Params4bit) store two values per uint8, so `numel()` is half the
  real parameter count; the original shape lives in `weight.quant_state.shape`.
- tied weights (lm_head sharing the embedding matrix) are one tensor; they are counted once,
  where they first appear, and the other owner is marked.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx
import pandas as pd
import torch
from torch import nn

from explorer.model.anatomy import Anatomy, LayerParts, find_anatomy

ROOT = ""  # node id of the whole model in the graph
ROLES = ("embeddings", "attention", "mlp", "norms", "lm_head", "other")
ROLE_LABELS = {"embeddings": "Embeddings", "attention": "Attention", "mlp": "MLP", "norms": "Norms",
               "lm_head": "LM head", "other": "Other"}


class ArchitectureError(ValueError):
    """A config or model that cannot be shown; the message is meant for the user as is."""


# --------------------------------------------------------------------------- parameter inventory


@dataclass(frozen=True)
class QuantInfo:
    """How a weight is quantized, read from bitsandbytes' own state (or planned by the estimator)."""

    kind: str              # "nf4" | "fp4" | "int8"
    blocksize: int | None  # elements per absmax block (4-bit); None for int8 (one scale per row)
    double_quant: bool = False

    def __str__(self) -> str:
        parts = [self.kind]
        if self.blocksize:
            parts.append(f"block {self.blocksize}")
        if self.double_quant:
            parts.append("double quant")
        return " · ".join(parts)


@dataclass(frozen=True)
class TensorRecord:
    """One parameter or buffer, counted as a user means it (logical elements, real bytes).

    `bytes` is what `get_memory_footprint()` counts (the tensor's own storage); `state_bytes` is
    what bitsandbytes keeps beside it (absmax, codebooks, row scales), which a GPU allocates too.
    """

    name: str                  # qualified, e.g. "model.layers.0.mlp.up_proj.weight"
    module: str                # qualified name of the owning module
    kind: str                  # "param" | "buffer"
    shape: tuple[int, ...]     # logical shape (unpacked for 4-bit)
    numel: int                 # logical element count
    dtype: str                 # storage dtype, e.g. "uint8" for packed 4-bit
    device: str
    bytes: int
    state_bytes: int = 0
    quant: QuantInfo | None = None
    aliases: tuple[str, ...] = ()  # other qualified names of the same tensor (tied weights)

    @property
    def total_bytes(self) -> int:
        return self.bytes + self.state_bytes


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _quant_state_bytes(state) -> int:
    """Bytes of a bnb QuantState: absmax and codebook, plus the nested state under double quant."""
    total = _tensor_bytes(getattr(state, "absmax", None)) + _tensor_bytes(getattr(state, "code", None))
    offset = getattr(state, "offset", None)
    if isinstance(offset, torch.Tensor):
        total += _tensor_bytes(offset)
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += _quant_state_bytes(nested)
    return total


def logical_shape(param: torch.Tensor) -> tuple[int, ...]:
    """The shape the layer computes with: a Params4bit's packed (n/2, 1) storage unfolded."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return tuple(int(d) for d in state.shape)
    return tuple(int(d) for d in param.shape)


def quant_info(param: torch.Tensor) -> QuantInfo | None:
    state = getattr(param, "quant_state", None)
    if state is not None:
        return QuantInfo(kind=str(getattr(state, "quant_type", "4bit")), blocksize=getattr(state, "blocksize", None),
                         double_quant=bool(getattr(state, "nested", False)))
    if type(param).__name__ == "Int8Params" or (param.dtype == torch.int8 and hasattr(param, "SCB")):
        return QuantInfo(kind="int8", blocksize=None)
    return None


def _record(name: str, kind: str, t: torch.Tensor, aliases: tuple[str, ...] = ()) -> TensorRecord:
    shape = logical_shape(t)
    state = getattr(t, "quant_state", None)
    state_bytes = _quant_state_bytes(state) if state is not None else 0
    scb = getattr(t, "SCB", None)
    if isinstance(scb, torch.Tensor):
        state_bytes += _tensor_bytes(scb)
    return TensorRecord(name=name, module=name.rpartition(".")[0], kind=kind, shape=shape,
                        numel=math.prod(shape), dtype=_dtype_name(t.dtype), device=str(t.device),
                        bytes=_tensor_bytes(t), state_bytes=state_bytes, quant=quant_info(t), aliases=aliases)


def inventory(model: nn.Module) -> list[TensorRecord]:
    """Every distinct parameter and buffer as stored now, first occurrence first, aliases kept."""
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = id(p)
        if key in first:
            aliases[first[key]].append(name)
        else:
            first[key] = name
            aliases[name] = []
    params = dict(model.named_parameters())
    records = [_record(n, "param", params[n], tuple(aliases.get(n, ()))) for n in params]
    records += [_record(n, "buffer", b) for n, b in model.named_buffers()]
    return records


def count_parameters(model: nn.Module) -> int:
    """Parameters as the architecture defines them: 4-bit weights unpacked, tied weights once."""
    return sum(math.prod(logical_shape(p)) for p in model.parameters())


# --------------------------------------------------------------------------- roles and teaching text


_LEAF_TEXT = {
    "q_proj": "Query projection: what each token is looking for in earlier tokens.",
    "k_proj": "Key projection: what each token offers to be found by later tokens.",
    "v_proj": "Value projection: the content a token passes on when attended to.",
    "o_proj": "Output projection: mixes the heads' results back into the residual stream.",
    "qkv_proj": "Queries, keys and values computed by one fused matrix.",
    "c_attn": "Queries, keys and values computed by one fused matrix (GPT-2's Conv1D).",
    "gate_proj": "Gate of the gated MLP: decides, feature by feature, how much of up_proj passes.",
    "up_proj": "Expands each token's vector to the wider intermediate size.",
    "down_proj": "Projects the intermediate features back to the hidden size, into the residual stream.",
    "gate_up_proj": "Gate and up projections of the gated MLP, fused into one matrix.",
    "c_fc": "Expands each token's vector to the wider intermediate size (GPT-2's Conv1D).",
    "act_fn": "The MLP's non-linearity (SiLU/GELU); without it the MLP would be one linear map.",
    "act": "The MLP's non-linearity; without it the MLP would be one linear map.",
    "rotary_emb": "Rotary position embedding: rotates queries and keys by position; no learned weights.",
    "q_norm": "Normalizes queries per head before scores are taken.",
    "k_norm": "Normalizes keys per head before scores are taken.",
}
_ROLE_TEXT = {
    "embeddings": "Token embedding: one learned vector per vocabulary entry starts the residual stream.",
    "positions": "Learned absolute positions: one vector per position, added to the token vectors.",
    "attention": "Self-attention: each token gathers information from earlier tokens (causal).",
    "mlp": "Feed-forward network applied to each token alone; holds most of the parameters.",
    "lm_head": "LM head: projects the final hidden state onto the vocabulary, one logit per token.",
    "final_norm": "Final norm: rescales the residual stream before the LM head reads it.",
    "layers": "The stack of identical decoder layers; the residual stream passes through them in order.",
    "layer": "One decoder layer: attention then MLP, each adding its result to the residual stream.",
    "root": "The whole causal language model: body plus LM head.",
    "body": "The transformer body: embeddings, decoder layers and final norm, without the LM head.",
}
NORM_TEXT = {
    "pre_attention": "Normalizes the residual stream before attention reads it.",
    "post_attention": "Normalizes attention's output before it is added to the residual stream.",
    "pre_mlp": "Normalizes the residual stream before the MLP reads it.",
    "post_mlp": "Normalizes the MLP's output before it is added to the residual stream.",
    "norm": "Normalizes the residual stream inside the layer.",
}


def norm_placements(layer: LayerParts) -> dict[str, str]:
    """Where each residual-path norm sits (pre/post attention, pre/post MLP).

    Names mislead here: Llama's `post_attention_layernorm` is the norm *before* the MLP, while
    Gemma-2's is applied to attention's output. Count first, then the names that say it outright.
    """
    norms = list(layer.norms)
    if len(norms) == 4:
        return dict(zip(norms, ("pre_attention", "post_attention", "pre_mlp", "post_mlp")))
    if len(norms) == 2:
        return dict(zip(norms, ("pre_attention", "pre_mlp")))
    placed = {}
    for i, name in enumerate(norms):
        leaf = name.rsplit(".", 1)[-1]
        if "pre_feedforward" in leaf or "pre_mlp" in leaf:
            placed[name] = "pre_mlp"
        elif "post_feedforward" in leaf or "post_mlp" in leaf:
            placed[name] = "post_mlp"
        elif i == 0:
            placed[name] = "pre_attention"  # one norm feeding parallel attention and MLP, or the first of three
        else:
            placed[name] = "norm"
    return placed


def _roles(anatomy: Anatomy) -> tuple[dict[str, str], dict[str, str]]:
    """(role per module that heads a part, teaching key per module) from the anatomy."""
    role: dict[str, str] = {}
    text: dict[str, str] = {ROOT: _ROLE_TEXT["root"]}
    if anatomy.embed_tokens:
        role[anatomy.embed_tokens] = "embeddings"
        text[anatomy.embed_tokens] = _ROLE_TEXT["embeddings"]
    if anatomy.embed_positions:
        role[anatomy.embed_positions] = "embeddings"
        text[anatomy.embed_positions] = _ROLE_TEXT["positions"]
    if anatomy.layers_path:
        text[anatomy.layers_path] = _ROLE_TEXT["layers"]
    for layer in anatomy.layers:
        text[layer.name] = _ROLE_TEXT["layer"]
        if layer.attention:
            role[layer.attention] = "attention"
            text[layer.attention] = _ROLE_TEXT["attention"]
        if layer.mlp:
            role[layer.mlp] = "mlp"
            text[layer.mlp] = _ROLE_TEXT["mlp"]
        for name, place in norm_placements(layer).items():
            role[name] = "norms"
            text[name] = NORM_TEXT[place]
    if anatomy.final_norm:
        role[anatomy.final_norm] = "norms"
        text[anatomy.final_norm] = _ROLE_TEXT["final_norm"]
    if anatomy.lm_head:
        role[anatomy.lm_head] = "lm_head"
        text[anatomy.lm_head] = _ROLE_TEXT["lm_head"]
    return role, text


def _generic_text(name: str, cls: str, parent_role: str | None, has_children: bool) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "c_proj":
        return (_LEAF_TEXT["o_proj"] if parent_role == "attention"
                else "Projects the intermediate features back to the hidden size, into the residual stream.")
    if leaf in _LEAF_TEXT:
        return _LEAF_TEXT[leaf]
    low = cls.lower()
    if "dropout" in low or "drop" in leaf:
        return "Dropout: zeroes random activations in training; does nothing at inference."
    if "norm" in low:
        return "Normalization: rescales vectors to a steady size so deep stacks stay trainable."
    if "rotary" in low:
        return _LEAF_TEXT["rotary_emb"]
    if "embedding" in low:
        return "Embedding table: one learned vector per index."
    if "linear" in low or "conv1d" in low:
        return "Linear projection: a learned matrix applied to each token's vector."
    if any(w in low for w in ("silu", "gelu", "relu", "activation", "tanh")):
        return "Element-wise non-linearity."
    if "model" in low and name.count(".") == 0 and has_children:
        return _ROLE_TEXT["body"]
    return "Container grouping the modules below it." if has_children else "Module without learned weights."


# --------------------------------------------------------------------------- the graph


def _fmt_shape(shape: Iterable[int]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def build_graph(model: nn.Module, records: list[TensorRecord] | None = None,
                anatomy: Anatomy | None = None) -> nx.DiGraph:
    """The containment tree: one node per module (id = qualified name, root = ""), edges parent→child.

    `records` defaults to the tensors as stored; pass a planned inventory (see memory_estimate)
    to show a meta-device model's bytes in a chosen precision. Counts and bytes are per subtree,
    each tensor counted once at its first owner.
    """
    records = inventory(model) if records is None else records
    anatomy = find_anatomy(model) if anatomy is None else anatomy
    head_roles, texts = _roles(anatomy)
    by_module: dict[str, list[TensorRecord]] = {}
    tied_in: dict[str, list[str]] = {}  # module → its names that alias a tensor owned elsewhere
    for r in records:
        by_module.setdefault(r.module, []).append(r)
        for alias in r.aliases:
            tied_in.setdefault(alias.rpartition(".")[0], []).append(f"{alias.rpartition('.')[2]} = {r.name}")

    g = nx.DiGraph(model_class=type(model).__name__, anatomy=anatomy)
    for name, module in model.named_modules(remove_duplicate=False):
        parent = name.rpartition(".")[0] if name else None
        own = by_module.get(name, [])
        params = [r for r in own if r.kind == "param"]
        role = head_roles.get(name) or (g.nodes[parent]["role"] if parent is not None and parent in g else None)
        has_children = next(module.children(), None) is not None
        leaf = name.rpartition(".")[2]
        tied = tied_in.get(name, [])
        shared = sum(next((r.numel for r in records if f"{name}.{t.split(' = ')[0]}" in r.aliases), 0)
                     for t in tied)
        g.add_node(
            name,
            label=leaf or type(model).__name__,
            cls=type(module).__name__,
            depth=name.count(".") + 1 if name else 0,
            role=role,
            explain=texts.get(name) or _generic_text(name, type(module).__name__,
                                                     g.nodes[parent]["role"] if parent in g else None,
                                                     has_children),
            own_params=sum(r.numel for r in params),
            own_bytes=sum(r.total_bytes for r in own),
            shapes={r.name.rpartition(".")[2]: r.shape for r in params},
            dtypes=sorted({r.dtype for r in params}),
            quant=next((str(r.quant) for r in params if r.quant is not None), ""),
            device=next((r.device for r in own), ""),
            tied=tied,
            tied_params=shared,
        )
        if parent is not None:
            g.add_edge(parent, name)
    # Subtree totals, children before parents.
    for node in reversed(list(nx.topological_sort(g))):
        data = g.nodes[node]
        kids = list(g.successors(node))
        data["params"] = data["own_params"] + sum(g.nodes[k]["params"] for k in kids)
        data["bytes"] = data["own_bytes"] + sum(g.nodes[k]["bytes"] for k in kids)
        if not data["device"]:
            devices = {g.nodes[k]["device"] for k in kids} - {""}
            data["device"] = devices.pop() if len(devices) == 1 else ("mixed" if devices else "")
    return g


def module_table(g: nx.DiGraph) -> pd.DataFrame:
    """One row per module, in tree order, for filtering and CSV download."""
    rows = []
    for name in nx.dfs_preorder_nodes(g, ROOT):
        d = g.nodes[name]
        rows.append({
            "module": name or "(model)",
            "class": d["cls"],
            "depth": d["depth"],
            "role": ROLE_LABELS.get(d["role"] or "", ""),
            "params": d["params"],
            "own_params": d["own_params"],
            "bytes": d["bytes"],
            "shapes": "; ".join(f"{k} {_fmt_shape(v)}" for k, v in d["shapes"].items()),
            "dtype": ", ".join(d["dtypes"]),
            "quant": d["quant"],
            "device": d["device"],
            "tied": "; ".join(d["tied"]),
            "what it does": d["explain"],
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- breakdown


@dataclass(frozen=True)
class BreakdownRow:
    role: str
    label: str
    params: int
    bytes: int
    share: float          # of all parameters
    note: str = ""        # e.g. "tied to model.embed_tokens.weight: counted under Embeddings"


def parameter_breakdown(g: nx.DiGraph) -> list[BreakdownRow]:
    """Parameters per part of the architecture; every parameter lands in exactly one row."""
    params = dict.fromkeys(ROLES, 0)
    size = dict.fromkeys(ROLES, 0)
    for name in g.nodes:
        d = g.nodes[name]
        role = d["role"] or "other"
        params[role] += d["own_params"]
        size[role] += d["own_bytes"]
    total = sum(params.values()) or 1
    anatomy: Anatomy = g.graph["anatomy"]
    notes = dict.fromkeys(ROLES, "")
    if anatomy.lm_head and g.nodes.get(anatomy.lm_head, {}).get("tied"):
        notes["lm_head"] = ("tied to the token embedding (" + "; ".join(g.nodes[anatomy.lm_head]["tied"])
                            + "): counted once, under Embeddings")
        notes["embeddings"] = "includes the LM head's tied matrix"
    return [BreakdownRow(r, ROLE_LABELS[r], params[r], size[r], params[r] / total, notes[r])
            for r in ROLES if params[r] or r != "other" or notes[r]]


def tied_weights(records: list[TensorRecord]) -> dict[str, tuple[str, ...]]:
    return {r.name: r.aliases for r in records if r.aliases}


# --------------------------------------------------------------------------- data flow


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
    nodes.append(FlowNode(entry, "stream", f"layer {i}", layer.name, _ROLE_TEXT["layer"]))

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
                  ("attention", "attention", layer.attention, "attention", _ROLE_TEXT["attention"]),
                  ("post_attention", "norm", by_place.get("post_attention"), "post-norm", NORM_TEXT["post_attention"])]
    mid = branch(entry, attn_parts, f"L{i}:add1")
    mlp_parts = [("pre_mlp", "norm", by_place.get("pre_mlp"), "norm", NORM_TEXT["pre_mlp"]),
                 ("mlp", "mlp", layer.mlp, "MLP", _ROLE_TEXT["mlp"]),
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
        nodes.append(FlowNode("embed", "embed", "token<br>embedding", anatomy.embed_tokens, _ROLE_TEXT["embeddings"]))
        prev = "embed"
    if anatomy.embed_positions:
        nodes.append(FlowNode("pos", "positions", "position<br>embedding", anatomy.embed_positions,
                              _ROLE_TEXT["positions"], y=1.0))
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
        nodes.append(FlowNode("final_norm", "norm", "final<br>norm", anatomy.final_norm, _ROLE_TEXT["final_norm"]))
        link("final_norm")
    if anatomy.lm_head:
        nodes.append(FlowNode("head", "head", "LM head", anatomy.lm_head, _ROLE_TEXT["lm_head"]))
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


# --------------------------------------------------------------------------- from a config


def model_from_config(config, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """The model's skeleton on the meta device: every module and shape, no memory, no weights.

    Always bf16 so the memory estimator can tell buffers that follow the load dtype (bf16 here)
    from those that stay fp32 whatever the load dtype (rotary frequencies).
    """
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", "")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ArchitectureError(f"A {model_type!r} model is not a causal language model: transformers has no "
                                "causal-LM class for it, so there is no text-generating architecture to show.")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - a config with inconsistent sizes fails here
        raise ArchitectureError(f"This {model_type!r} config does not describe a buildable model: "
                                f"{type(exc).__name__}: {exc}") from None
    return model.eval()


def config_dict(config) -> dict:
    """The config as plain JSON-able data, without transformers' bookkeeping keys."""
    data = config.to_diff_dict() if hasattr(config, "to_diff_dict") else dict(config)
    data = {k: v for k, v in data.items() if k not in {"transformers_version", "_name_or_path"}}
    data.setdefault("model_type", getattr(config, "model_type", ""))
    return dict(sorted(data.items()))


@dataclass
class ArchitectureView:
    """Everything the page and CLI draw, with no reference to the model (so it can be cached)."""

    name: str
    model_class: str
    meta: bool                      # built from the config alone
    precision: str                  # what the bytes describe: as loaded, or the planned precision
    config: dict
    graph: nx.DiGraph
    anatomy: Anatomy
    total_params: int
    total_bytes: int
    breakdown: list[BreakdownRow]
    tied: dict[str, tuple[str, ...]]

    @property
    def num_modules(self) -> int:
        return self.graph.number_of_nodes()


def describe_model(model: nn.Module, name: str, precision: str = "as loaded",
                   records: list[TensorRecord] | None = None) -> ArchitectureView:
    records = inventory(model) if records is None else records
    anatomy = find_anatomy(model)
    g = build_graph(model, records, anatomy)
    meta = any(r.device == "meta" for r in records)
    config = config_dict(model.config) if hasattr(model, "config") else {}
    return ArchitectureView(name=name, model_class=type(model).__name__, meta=meta, precision=precision,
                            config=config, graph=g, anatomy=anatomy, total_params=g.nodes[ROOT]["params"],
                            total_bytes=g.nodes[ROOT]["bytes"], breakdown=parameter_breakdown(g),
                            tied=tied_weights(records))


def describe_config(config, name: str, precision: str = "nf4-dq") -> ArchitectureView:
    """Architecture-only mode: the tree of a model from its config, bytes planned for `precision`."""
    from explorer.analyse.memory_estimate import planned_inventory

    model = model_from_config(config)
    return describe_model(model, name, precision, planned_inventory(model, precision))
