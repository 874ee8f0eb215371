"""Applying interventions (record/interventions.py) with hooks on the unmodified modules.

Why hooks on module inputs: a head's output is its slice of the attention output projection's
INPUT, and a neuron is an input of the MLP's down projection, so a 4-bit or 8-bit projection
runs its own kernel on the changed input and quantization never matters. Blocks are skipped
and residuals patched on module outputs, which are plain activations in every precision.

Every spec is checked against the model's anatomy (and the prompt's length, and the patch
source's) before the first hook is registered, so a bad spec leaves the model untouched; the
hooks are always removed in `finally`. They act only in the thread that entered the context:
a shared model serving another thread meanwhile is not changed for it.

Rows: each hook can act on every row of the batch or on one row. Patching runs many patched
copies of one prompt in one forward, row b carrying its own patch (analyse/patching.py).
"""
from __future__ import annotations

import contextlib
import inspect
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from explorer.model.anatomy import find_anatomy, resolve
from explorer.record.hooks import forward_hooks
from explorer.record.interventions import BadIntervention, HeadAblation, Intervention, NeuronAblation, Patch, SkipBlock
from explorer.record.weights import find_output_projection, first_output


@dataclass
class LayerSites:
    layer: nn.Module
    attention: nn.Module | None
    o_proj: nn.Module | None         # the attention output projection: its input is the heads' z
    mlp: nn.Module | None
    down_proj: nn.Module | None      # the MLP's down projection: its input is the neurons
    n_neurons: int


@dataclass
class Sites:
    """Where interventions hook into one model; found by inspection, cached per model."""
    layers: list[LayerSites]
    n_heads: int
    head_dim: int
    hidden: int


@dataclass
class Activations:
    """What a patch copies from another run: residual after each layer (L, T, d) and every
    head's z (L, T, H, hd), plus that run's last-position logits (V,) float32."""
    resid: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor

    @property
    def length(self) -> int:
        return int(self.resid.shape[1])


def _in_features(module: nn.Module) -> int:
    if type(module).__name__ == "Conv1D":
        return int(module.weight.shape[0])
    return int(module.in_features)


def _adds_residual(module: nn.Module | None) -> bool:
    try:
        return module is not None and "residual" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


_SITES: weakref.WeakKeyDictionary[nn.Module, Sites] = weakref.WeakKeyDictionary()   # a replaced model frees its entry


def sites_of(model: nn.Module) -> Sites:
    cached = _SITES.get(model)
    if cached is not None:
        return cached
    config = model.config
    hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
    n_heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    layers = []
    for lp in find_anatomy(model).layers:
        attn, mlp = resolve(model, lp.attention), resolve(model, lp.mlp)
        o_name = find_output_projection(attn, hidden) if attn is not None else None
        d_name = find_output_projection(mlp, hidden) if mlp is not None else None
        o_proj = attn.get_submodule(o_name) if o_name else None
        down = mlp.get_submodule(d_name) if d_name else None
        layers.append(LayerSites(resolve(model, lp.name), attn, o_proj, mlp, down,
                                 _in_features(down) if down is not None else 0))
    first = next((s.o_proj for s in layers if s.o_proj is not None), None)
    head_dim = _in_features(first) // n_heads if first is not None else 0
    sites = Sites(layers, n_heads, head_dim, hidden)
    _SITES[model] = sites
    return sites


def validate(model: nn.Module, specs: Sequence[Intervention], length: int | None = None,
             source: Activations | None = None) -> Sites:
    """Raise BadIntervention (one sentence) for the first spec that cannot apply; touch nothing."""
    sites = sites_of(model)
    n_layers = len(sites.layers)
    if source is not None and length is not None and source.length != length:
        raise BadIntervention(f"The two prompts differ in length ({source.length} and {length} tokens); "
                              "patching needs prompts of the same token length.")
    for spec in specs:
        name = spec.short()
        if not 0 <= spec.layer < n_layers:
            raise BadIntervention(f"{name}: the model has layers 0 to {n_layers - 1}.")
        at = sites.layers[spec.layer]
        if isinstance(spec, HeadAblation) or (isinstance(spec, Patch) and spec.site == "head"):
            if at.o_proj is None:
                raise BadIntervention(f"{name}: no attention output projection was found in layer {spec.layer}.")
            if spec.head is None or not 0 <= spec.head < sites.n_heads:
                raise BadIntervention(f"{name}: the model has heads 0 to {sites.n_heads - 1}.")
        if isinstance(spec, HeadAblation):
            if spec.mode not in ("zero", "scale", "mean") or not math.isfinite(spec.factor):
                raise BadIntervention(f"{name}: the mode must be zero, scale or mean, with a finite factor.")
        elif isinstance(spec, NeuronAblation):
            if at.down_proj is None:
                raise BadIntervention(f"{name}: no MLP down projection was found in layer {spec.layer}.")
            if not 0 <= spec.neuron < at.n_neurons or not math.isfinite(spec.factor):
                raise BadIntervention(f"{name}: layer {spec.layer}'s MLP has neurons 0 to {at.n_neurons - 1}.")
        elif isinstance(spec, SkipBlock):
            block = at.attention if spec.block == "attn" else at.mlp if spec.block == "mlp" else None
            if block is None or _adds_residual(block):
                raise BadIntervention(f"{name}: layer {spec.layer} has no separate {spec.block} block to skip.")
        elif isinstance(spec, Patch):
            if spec.site not in ("resid", "head"):
                raise BadIntervention(f"{name}: a patch is of the residual stream or of a head.")
            if source is None:
                raise BadIntervention(f"{name}: a patch needs the run to copy from (a clean prompt).")
            if spec.position is not None and not 0 <= spec.position < source.length:
                raise BadIntervention(f"{name}: position {spec.position} is past the prompt's "
                                      f"{source.length} tokens.")
        else:
            raise BadIntervention(f"{spec!r} is not an intervention.")
    return sites


def _rows(row: int | None) -> slice:
    return slice(None) if row is None else slice(row, row + 1)


def _replace_input(args, kwargs, value):
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "input": value}


def _replace_output(output, value):
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


class _Hooks:
    """Hook bodies for one `intervene` context; `mine()` is true in the thread that entered it."""

    def __init__(self, sites: Sites, source: Activations | None) -> None:
        self.sites, self.source = sites, source
        self.owner = threading.get_ident()
        self.means: dict[tuple, torch.Tensor] = {}     # (layer, head, row) -> (b, 1, hd), set at the prefill

    def mine(self) -> bool:
        return threading.get_ident() == self.owner

    def heads(self, layer: int, ops: list[tuple[Intervention, int | None]]):
        h_all, hd = self.sites.n_heads, self.sites.head_dim

        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("input")
            if not self.mine() or not isinstance(x, torch.Tensor):
                return None
            b, t = x.shape[0], x.shape[1]
            z = x.reshape(b, t, h_all, hd).clone()                                # (B, T, H, hd)
            for spec, row in ops:
                r = _rows(row)
                if isinstance(spec, Patch):
                    if t == self.source.length:
                        at = slice(None) if spec.position is None else spec.position
                        z[r, at, spec.head] = self.source.z[layer, at, spec.head].to(z)
                elif spec.mode == "zero":
                    z[r, :, spec.head] = 0
                elif spec.mode == "scale":
                    z[r, :, spec.head] *= spec.factor
                else:                                   # the prompt's mean, kept for later decode steps
                    key = (layer, spec.head, row)
                    if t > 1 or key not in self.means:
                        self.means[key] = z[r, :, spec.head].mean(1, keepdim=True)  # (b, 1, hd)
                    z[r, :, spec.head] = self.means[key].to(z)
            return _replace_input(args, kwargs, z.reshape(x.shape))
        return hook

    def neurons(self, ops: list[tuple[NeuronAblation, int | None]]):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("input")
            if not self.mine() or not isinstance(x, torch.Tensor):
                return None
            x = x.clone()                                                          # (B, T, n_neurons)
            for spec, row in ops:
                x[_rows(row), ..., spec.neuron] *= spec.factor
            return _replace_input(args, kwargs, x)
        return hook

    def zero_block(self, rows: list[int | None]):
        def hook(module, args, output):
            out = first_output(output)
            if not self.mine() or not isinstance(out, torch.Tensor):
                return None
            if None in rows:
                return _replace_output(output, torch.zeros_like(out))
            out = out.clone()
            for row in rows:
                out[_rows(row)] = 0
            return _replace_output(output, out)
        return hook

    def residual(self, layer: int, ops: list[tuple[Patch, int | None]]):
        def hook(module, args, output):
            out = first_output(output)
            if not self.mine() or not isinstance(out, torch.Tensor) or out.shape[1] != self.source.length:
                return None
            out = out.clone()                                                      # (B, T, d)
            for spec, row in ops:
                at = slice(None) if spec.position is None else spec.position
                out[_rows(row), at] = self.source.resid[layer, at].to(out)
            return _replace_output(output, out)
        return hook


def registrations(sites: Sites, plan: Sequence[tuple[Intervention, int | None]], source: Activations | None):
    hooks = _Hooks(sites, source)
    by_site: dict[tuple[str, int], list] = {}
    for spec, row in plan:
        if isinstance(spec, HeadAblation) or (isinstance(spec, Patch) and spec.site == "head"):
            kind = "heads"
        elif isinstance(spec, NeuronAblation):
            kind = "neurons"
        elif isinstance(spec, SkipBlock):
            kind = spec.block
        else:
            kind = "resid"
        by_site.setdefault((kind, spec.layer), []).append((spec, row))
    regs = []
    for (kind, layer), ops in by_site.items():
        at = sites.layers[layer]
        if kind == "heads":
            regs.append((at.o_proj, "pre", hooks.heads(layer, ops)))
        elif kind == "neurons":
            regs.append((at.down_proj, "pre", hooks.neurons(ops)))
        elif kind in ("attn", "mlp"):
            regs.append((at.attention if kind == "attn" else at.mlp, "post", hooks.zero_block([r for _, r in ops])))
        else:
            regs.append((at.layer, "post", hooks.residual(layer, ops)))
    return regs


@contextlib.contextmanager
def intervene_rows(model: nn.Module, plan: Sequence[tuple[Intervention, int | None]],
                   source: Activations | None = None, length: int | None = None) -> Iterator[Sites]:
    """`intervene` with a batch row per spec (None: every row)."""
    sites = validate(model, [spec for spec, _ in plan], length, source)
    with forward_hooks(registrations(sites, plan, source)):
        yield sites


@contextlib.contextmanager
def intervene(model: nn.Module, specs: Sequence[Intervention], source: Activations | None = None,
              length: int | None = None) -> Iterator[Sites]:
    """Every forward of `model` in this thread, inside the block, runs with `specs` applied.
    length: the prompt's token count, to check positions and the source's length before any hook."""
    with intervene_rows(model, [(s, None) for s in specs], source, length) as sites:
        yield sites


def capture_under(model: nn.Module, tokenizer, prompt, options, specs: Sequence[Intervention]):
    """A capture (record/capture.py) of a forward run with `specs` applied; its notes say which
    applied, so its caption, its file and a link made from it all carry them."""
    from explorer.record.capture import capture
    from explorer.record.interventions import capture_note

    validate(model, specs)
    with intervene(model, specs):
        cap = capture(model, tokenizer, prompt, options)
    if specs:
        cap.notes.append(capture_note(specs))
    return cap


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def last_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, V) float32 logits at the last position of (B, T) ids (only the last is projected)."""
    ids = input_ids.to(model_device(model))
    if ids.dim() == 1:
        ids = ids[None]
    return model(input_ids=ids, logits_to_keep=1, use_cache=False).logits[:, -1].float()


@torch.inference_mode()
def record_activations(model: nn.Module, input_ids: torch.Tensor) -> Activations:
    """One run of a (T,) or (1, T) prompt, keeping what a patch copies: every layer's output and
    every head's z, on the model's device."""
    sites = sites_of(model)
    resid: dict[int, torch.Tensor] = {}
    z: dict[int, torch.Tensor] = {}
    owner = threading.get_ident()

    def keep_resid(i):
        def hook(module, args, output):
            if threading.get_ident() == owner:
                resid[i] = first_output(output)[0].detach().clone()               # (T, d)
        return hook

    def keep_z(i):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("input")
            if threading.get_ident() == owner:
                z[i] = x[0].reshape(x.shape[1], sites.n_heads, sites.head_dim).detach().clone()  # (T, H, hd)
        return hook

    regs = [(s.layer, "post", keep_resid(i)) for i, s in enumerate(sites.layers)]
    regs += [(s.o_proj, "pre", keep_z(i)) for i, s in enumerate(sites.layers) if s.o_proj is not None]
    with forward_hooks(regs):
        logits = last_logits(model, input_ids)[0]
    n = len(sites.layers)
    zs = torch.stack([z[i] for i in range(n)]) if len(z) == n else torch.empty(0)
    return Activations(torch.stack([resid[i] for i in range(n)]), zs, logits)


__all__ = ["Activations", "Sites", "capture_under", "intervene", "intervene_rows", "last_logits", "model_device",
           "record_activations", "sites_of", "validate"]
