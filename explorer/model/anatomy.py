"""Find a causal LM's parts (embeddings, decoder layers, norms, attention, MLP, head) by inspection.

Why inspection and not a table of module names per family: a table silently breaks on the
next architecture, while structure (a long ModuleList of identical blocks, norm-like leaves,
the model's own get_input_embeddings/get_output_embeddings) is shared by nearly every causal LM.
Works on models built on the meta device, because only module structure is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

_ATTN_WORDS = ("attention", "attn")
_MLP_WORDS = ("mlp", "feed_forward", "feedforward", "ffn", "ffwd")
_CROSS_WORDS = ("cross",)


@dataclass
class LayerParts:
    index: int
    name: str                 # qualified name of the decoder layer, e.g. "model.layers.3"
    attention: str | None     # qualified name of the self-attention module
    mlp: str | None
    norms: list[str] = field(default_factory=list)  # norm modules on the residual path, forward order


@dataclass
class Anatomy:
    embed_tokens: str | None
    embed_positions: str | None   # GPT-2 style absolute positions, else None
    layers_path: str              # e.g. "model.layers" (the ModuleList); "" when none was found
    layers: list[LayerParts]
    final_norm: str | None
    lm_head: str | None
    missing: list[str] = field(default_factory=list)  # plain-language things that could not be found

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def all_norms(self) -> list[str]:
        """Every residual-path norm in forward order: per layer, then the final norm."""
        names = [n for layer in self.layers for n in layer.norms]
        if self.final_norm:
            names.append(self.final_norm)
        return names


def is_norm_module(module: nn.Module) -> bool:
    """A normalisation leaf: a class called *Norm*, or a leaf whose only weight is 1-D.

    The 1-D-weight rule catches custom RMSNorms with odd class names; Linear/Embedding/Conv
    leaves are excluded because their weights are 2-D (or they carry their own types).
    """
    if isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
        return False
    cls = type(module).__name__.lower()
    if "norm" in cls and not any(True for _ in module.children()):
        return True
    if isinstance(module, (nn.Linear, nn.Embedding)) or any(True for _ in module.children()):
        return False
    params = dict(module.named_parameters(recurse=False))
    weight = params.get("weight")
    if weight is None or weight.dim() != 1:
        return False
    return set(params) <= {"weight", "bias"}


def _name_of(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def _block_signature(module: nn.Module) -> tuple:
    return (type(module).__name__, tuple(n for n, _ in module.named_children()))


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The longest ModuleList whose members are identical blocks that themselves contain modules.

    Ties go to the list holding more parameters, so a stack of decoder layers wins over, say, a
    list of per-layer norms of the same length.
    """
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        sigs = {_block_signature(m) for m in module}
        if len(sigs) != 1 or not any(True for _ in module[0].children()):
            continue
        n_params = sum(p.numel() for p in module.parameters())
        key = (len(module), n_params)
        if best is None or key > best[:2]:
            best = (len(module), n_params, name, module)
    if best is None:
        return None
    return best[2], best[3]


def _word_match(name: str, module: nn.Module, words: tuple[str, ...]) -> bool:
    leaf = name.rsplit(".", 1)[-1].lower()
    cls = type(module).__name__.lower()
    return any(w in leaf or w in cls for w in words)


def _find_attention(layer: nn.Module) -> str | None:
    """The outermost self-attention module in a layer (shortest name wins; 'cross' ones are skipped)."""
    candidates = []
    for name, module in layer.named_modules():
        if not name or is_norm_module(module):
            continue
        if _word_match(name, module, _ATTN_WORDS) and not _word_match(name, module, _CROSS_WORDS) and any(True for _ in module.parameters()):
            candidates.append(name)
    if not candidates:
        return None
    return min(candidates, key=lambda n: (n.count("."), "self" not in n.lower(), n))


def _find_mlp(layer: nn.Module, attention: str | None) -> str | None:
    candidates = []
    for name, module in layer.named_modules():
        if not name or is_norm_module(module):
            continue
        if attention and (name == attention or name.startswith(attention + ".")):
            continue
        if _word_match(name, module, _MLP_WORDS):
            candidates.append(name)
    if candidates:
        return min(candidates, key=lambda n: (n.count("."), n))
    # Fallback: the one direct child with parameters that is neither attention nor a norm.
    others = [n for n, m in layer.named_children()
              if n != attention and not is_norm_module(m) and any(True for _ in m.parameters())]
    if len(others) == 1:
        return others[0]
    # OPT-style: the MLP's linears sit on the layer itself (fc1, fc2). The last one writes the
    # MLP's output back to the hidden size, so its output is the MLP's output.
    linears = [n for n in others if isinstance(layer.get_submodule(n), nn.Linear)]
    if len(linears) >= 2 and linears == others:
        first, last = layer.get_submodule(linears[0]), layer.get_submodule(linears[-1])
        if first.in_features == last.out_features and first.out_features == last.in_features:
            return linears[-1]
    return None


def _layer_norms(layer: nn.Module, attention: str | None, mlp: str | None) -> list[str]:
    """Norms on the residual path: outside the attention and MLP blocks (q/k norms are per head)."""
    inner = [p for p in (attention, mlp) if p]
    names = []
    for name, module in layer.named_modules():
        if not name or not is_norm_module(module):
            continue
        if any(name == p or name.startswith(p + ".") for p in inner):
            continue
        names.append(name)
    return names


def find_anatomy(model: nn.Module) -> Anatomy:
    """Map a causal LM's parts by structure. Never raises: what it cannot find goes to `missing`."""
    missing: list[str] = []

    embed = None
    if hasattr(model, "get_input_embeddings"):
        try:
            embed = model.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            embed = None
    head = None
    if hasattr(model, "get_output_embeddings"):
        try:
            head = model.get_output_embeddings()
        except (NotImplementedError, AttributeError):
            head = None
    embed_name = _name_of(model, embed)
    head_name = _name_of(model, head)

    found = _find_layers(model)
    layers: list[LayerParts] = []
    layers_path = ""
    if found is None:
        missing.append("decoder layers (no list of identical blocks was found)")
    else:
        layers_path, layer_list = found
        for i, layer in enumerate(layer_list):
            attn = _find_attention(layer)
            mlp = _find_mlp(layer, attn)
            norms = _layer_norms(layer, attn, mlp)
            prefix = f"{layers_path}.{i}"
            layers.append(LayerParts(
                index=i, name=prefix,
                attention=f"{prefix}.{attn}" if attn else None,
                mlp=f"{prefix}.{mlp}" if mlp else None,
                norms=[f"{prefix}.{n}" for n in norms],
            ))
        if layers and layers[0].attention is None:
            missing.append("self-attention module inside the decoder layers")
        if layers and layers[0].mlp is None:
            missing.append("MLP module inside the decoder layers")
        if layers and not layers[0].norms:
            missing.append("normalisation modules inside the decoder layers")

    if embed_name is None:
        embed_name = _fallback_embedding(model, layers_path, exclude=None)
    if embed_name is None:
        missing.append("token embedding")

    positions = _find_position_embedding(model, layers_path, embed_name)

    final_norm = None
    for name, module in model.named_modules():
        if layers_path and (name == layers_path or name.startswith(layers_path + ".")):
            continue
        if is_norm_module(module):
            final_norm = name  # the last one registered outside the layers
    if final_norm is None:
        missing.append("final normalisation before the LM head")

    if head_name is None:
        missing.append("LM head (output projection to the vocabulary)")

    return Anatomy(embed_tokens=embed_name, embed_positions=positions, layers_path=layers_path,
                   layers=layers, final_norm=final_norm, lm_head=head_name, missing=missing)


def _outside(name: str, layers_path: str) -> bool:
    return not layers_path or not (name == layers_path or name.startswith(layers_path + "."))


def _fallback_embedding(model: nn.Module, layers_path: str, exclude: str | None) -> str | None:
    """The largest nn.Embedding outside the layers: vocabularies are larger than position tables."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and _outside(name, layers_path) and name != exclude:
            if best is None or module.num_embeddings > best[1]:
                best = (name, module.num_embeddings)
    return best[0] if best else None


def _find_position_embedding(model: nn.Module, layers_path: str, embed_name: str | None) -> str | None:
    """A learned absolute-position table: another nn.Embedding outside the layers, sized like the context."""
    config = getattr(model, "config", None)
    context = None
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        context = getattr(config, attr, None) if config is not None else None
        if context:
            break
    for name, module in model.named_modules():
        if not isinstance(module, nn.Embedding) or name == embed_name or not _outside(name, layers_path):
            continue
        if "pos" in name.lower() or (context and module.num_embeddings == context):
            return name
    return None


def resolve(model: nn.Module, name: str | None) -> nn.Module | None:
    """The module at a qualified name, or None."""
    if name is None:
        return None
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def describe(anatomy: Anatomy) -> str:
    """A short human-readable summary, used by the CLI and error messages."""
    first = anatomy.layers[0] if anatomy.layers else None
    lines = [
        f"embeddings: {anatomy.embed_tokens}" + (f" (+ positions {anatomy.embed_positions})" if anatomy.embed_positions else ""),
        f"decoder layers: {anatomy.layers_path} × {len(anatomy.layers)}",
    ]
    if first:
        lines.append(f"  layer 0: attention={first.attention} mlp={first.mlp} norms={first.norms}")
    lines.append(f"final norm: {anatomy.final_norm}; LM head: {anatomy.lm_head}")
    if anatomy.missing:
        lines.append("missing: " + "; ".join(anatomy.missing))
    return "\n".join(lines)


__all__ = ["Anatomy", "LayerParts", "find_anatomy", "is_norm_module", "resolve", "describe"]
