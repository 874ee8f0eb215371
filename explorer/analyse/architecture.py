"""The module tree of a causal LM as a networkx graph: counts, shapes, quantization, bytes, roles.

Why a graph and not `print(model)`: the same tree feeds the icicle, the module table, the
parameter breakdown and the memory estimate, and it can be built from a config alone on the
meta device, so a laptop can open an 8B model without its weights.
The counting (4-bit packing, tied weights) lives in explorer.analyse.inventory; the words for
each module in explorer.analyse.module_roles; the data-flow diagram in explorer.analyse.data_flow.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import networkx as nx
import pandas as pd
import torch
from torch import nn

from explorer.analyse.inventory import TensorRecord, inventory
from explorer.analyse.memory_estimate import planned_inventory
from explorer.analyse.module_roles import ROOT, generic_text, module_roles
from explorer.model.anatomy import Anatomy, find_anatomy
from explorer.model.configs import ArchitectureError

ROLES = ("embeddings", "attention", "mlp", "norms", "lm_head", "other")
ROLE_LABELS = {"embeddings": "Embeddings", "attention": "Attention", "mlp": "MLP", "norms": "Norms",
               "lm_head": "LM head", "other": "Other"}


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
    head_roles, texts = module_roles(anatomy)
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
            explain=texts.get(name) or generic_text(name, type(module).__name__,
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
    model = model_from_config(config)
    return describe_model(model, name, precision, planned_inventory(model, precision))
