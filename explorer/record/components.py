"""Record what each head and each MLP writes into the residual stream (the capture part "components").

Why these tensors and not the per-head outputs themselves: a head's output in residual space is
(T, d) per head, i.e. heads × T × d per layer. The input of the attention output projection, cut
per head (`z`, the size of the queries), plus that head's slice of the projection weight, gives
the same thing on demand (`z_h @ W_o[h]`) at a cost linear in T and no larger than Q.

The parts add up: residual_in + Σ_h head_h + attention bias + MLP (+ remainder) = residual_out.
Norms that sit on a block's output (Gemma-2's post-attention norm) are nonlinear only through a
per-token scalar, so they are stored linearised at each position (`NormLinear`) and applied to
each head's share; the same holds for the final norm before the LM head (direct logit
attribution). Everything kept here is plain tensors: a `Components` never holds a module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from explorer.model.anatomy import Anatomy, resolve

_OUT_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "out")


@dataclass
class NormLinear:
    """A normalisation linearised at each position: y[t] = scale[t] · gain ⊙ P(x[t]) + bias.

    P subtracts the mean over the hidden dimension (LayerNorm) or is the identity (RMSNorm).
    Exact at the recorded tokens: the per-token statistics are frozen into `scale`, so the map is
    linear and can be applied to each component of x separately (as the logit lens does).
    """
    scale: torch.Tensor            # (T,) float32
    gain: torch.Tensor             # (d,) float32
    bias: torch.Tensor | None      # (d,) float32
    center: bool

    def apply(self, x: torch.Tensor, positions: torch.Tensor | None = None, with_bias: bool = False) -> torch.Tensor:
        """x (..., P, d) with P = len(positions) (or T): the linear part of the norm, float32."""
        x = x.float()
        if self.center:
            x = x - x.mean(-1, keepdim=True)
        s = self.scale if positions is None else self.scale[positions]
        y = x * self.gain * s[:, None]
        if with_bias and self.bias is not None:
            y = y + self.bias
        return y


@dataclass
class Components:
    """Every layer's residual stream split into heads, attention bias, MLP and what is left.

    Layer l reads resid[l] and writes resid[l + 1]. Tensors are on CPU in the model's compute
    dtype, except the small float32 ones (norm linearisations, unembedding rows).
    """
    resid: torch.Tensor                  # (L+1, T, d) residual entering each layer; [L] leaves the last
    z: torch.Tensor                      # (L, T, H, hd) input of each attention output projection, per head
    w_o: torch.Tensor                    # (L, H, hd, d) each head's slice of the output projection
    b_o: torch.Tensor | None             # (L, d) output projection bias, float32
    mlp: torch.Tensor                    # (L, T, d) MLP output as added to the residual (after any post-norm)
    values: torch.Tensor | None          # (L, KV, T, hd) attention values (routes); None if not recorded
    attn_post_norm: list[NormLinear | None]   # per layer: a norm between attention and the residual
    final_norm: NormLinear | None        # the norm before the LM head, linearised at every position
    unembed_ids: torch.Tensor            # (n,) int64 token ids whose LM-head rows are kept
    unembed_rows: torch.Tensor           # (n, d) float32
    unembed_bias: torch.Tensor | None    # (n,) float32
    predicted: torch.Tensor              # (T,) int64 the model's top next token at each position
    kv_head_of: list[int]                # (H,) KV head read by each query head
    final_softcap: float | None = None   # Gemma-2 caps logits after the LM head: attribution is pre-cap
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return int(self.z.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.z.shape[2])

    def unembedding(self, token_id: int) -> tuple[torch.Tensor, float]:
        """The LM head's row (d,) and bias of one token, if it was kept at capture time."""
        hits = (self.unembed_ids == int(token_id)).nonzero()
        if hits.numel() == 0:
            raise KeyError(f"token {token_id} was not kept for attribution; keep it with "
                           "CaptureOptions.attribution_tokens or choose the predicted or next token")
        i = int(hits[0, 0])
        bias = float(self.unembed_bias[i]) if self.unembed_bias is not None else 0.0
        return self.unembed_rows[i], bias


# --------------------------------------------------------------------------------------------
# Reading weights (4-bit included) and norms
# --------------------------------------------------------------------------------------------

def dense_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) float32 weight of a Linear, a GPT-2 Conv1D, or a bitsandbytes 4-/8-bit Linear."""
    weight = module.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf
        return bnbf.dequantize_4bit(weight.data, quant_state).float()
    scb = getattr(weight, "SCB", None)
    if scb is not None and weight.dtype == torch.int8:
        return (weight.data.float() * scb.float()[:, None] / 127.0)
    w = weight.detach().float()
    if type(module).__name__ == "Conv1D":
        return w.t()
    return w


def _out_features(module: nn.Module) -> int | None:
    if type(module).__name__ == "Conv1D":
        return int(module.nf)
    return getattr(module, "out_features", None)


def find_output_projection(attention: nn.Module, hidden: int) -> str | None:
    """The attention module's output projection: a linear child writing `hidden` features, by
    conventional name first, else the last such child registered."""
    found = [(n, m) for n, m in attention.named_modules()
             if n and hasattr(m, "weight") and getattr(m.weight, "dim", lambda: 0)() == 2
             and _out_features(m) == hidden]
    for name, _ in found:
        if name.rsplit(".", 1)[-1] in _OUT_NAMES:
            return name
    return found[-1][0] if found else None


@torch.inference_mode()
def probe_norm(module: nn.Module, d: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(gain, bias, center) of a LayerNorm- or RMSNorm-like module, found by running it on probes.

    Why probes: RMSNorm variants store their scale as w or 1 + w, LayerNorms centre, some have a
    bias; running the module on 0, on a constant and on an alternating vector tells all of it
    without a per-family table. Any constant factor (eps) is absorbed by the fitted scale.
    """
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    run = lambda x: _first(module(x.to(device=device, dtype=dtype)[None]))[0].float().cpu()  # noqa: E731
    bias = run(torch.zeros(d))
    alt = (-1.0) ** torch.arange(d, dtype=torch.float32)
    on_const = (run(torch.ones(d)) - bias).abs().max()
    on_alt = (run(alt) - bias).abs().max()
    center = bool(on_const <= 1e-3 * on_alt)
    p = alt - alt.mean() if center else alt
    gain = (run(p) - bias) * p.square().mean().sqrt() / p
    return gain, (bias if bias.abs().max() > 0 else None), center


def fit_scale(x: torch.Tensor, y: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None,
              center: bool) -> torch.Tensor:
    """(T,) per-token scale s with y ≈ s · gain ⊙ P(x) + bias (least squares, exact for a norm)."""
    x = x.float()
    if center:
        x = x - x.mean(-1, keepdim=True)
    gx = x * gain.to(x.device)
    target = y.float() - (bias.to(x.device) if bias is not None else 0.0)
    return ((target * gx).sum(-1) / gx.square().sum(-1).clamp_min(1e-30)).cpu()


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------

def components_bytes(n_layers: int, t: int, hidden: int, n_heads: int, n_kv: int, head_dim: int,
                     act_bytes: int) -> int:
    """What a components record holds: residual, z, MLP and values per layer, and W_o in float32."""
    per_layer = t * (2 * hidden + n_heads * head_dim + n_kv * head_dim) * act_bytes
    return n_layers * per_layer + t * hidden * act_bytes + n_layers * n_heads * head_dim * hidden * 4


class ComponentsRecorder:
    """Hook bodies for one capture's components. `mine()` tells whether the running forward
    belongs to this capture; `offload` moves tensors to the host (asynchronously on CUDA)."""

    def __init__(self, model: nn.Module, anatomy: Anatomy, n_heads: int, hidden: int,
                 mine: Callable[[], bool], offload) -> None:
        self.model, self.anatomy, self.n_heads, self.hidden = model, anatomy, n_heads, hidden
        self.mine, self.offload = mine, offload
        n = len(anatomy.layers)
        self.resid: list[torch.Tensor | None] = [None] * (n + 1)
        self.z: list[torch.Tensor | None] = [None] * n
        self.mlp: list[torch.Tensor | None] = [None] * n
        self.values: list[torch.Tensor | None] = [None] * n
        self.post_attn: list[NormLinear | None] = [None] * n
        self.final: NormLinear | None = None
        self.final_out: torch.Tensor | None = None          # (T, d) on device, for predictions
        self._live: dict[int, dict[str, torch.Tensor]] = {}  # per layer: attn/mlp outputs during its forward
        self._probes: dict[str, tuple] = {}
        self.o_proj: list[nn.Module | None] = []
        self._attn_layer: dict[int, int] = {}

    def registrations(self) -> list[tuple[nn.Module, str, Callable]]:
        regs: list[tuple[nn.Module, str, Callable]] = []
        for lp in self.anatomy.layers:
            layer = resolve(self.model, lp.name)
            attn = resolve(self.model, lp.attention)
            mlp = resolve(self.model, lp.mlp)
            proj_name = find_output_projection(attn, self.hidden) if attn is not None else None
            proj = attn.get_submodule(proj_name) if proj_name else None
            self.o_proj.append(proj)
            if attn is not None:
                self._attn_layer[id(attn)] = lp.index
            if lp.index == 0:
                regs.append((layer, "pre", self._layer_input))
            regs.append((layer, "post", self._layer_output(lp.index)))
            if proj is not None:
                regs.append((proj, "pre", self._z_hook(lp.index)))
            for module, key in ((attn, "attn"), (mlp, "mlp")):
                if module is not None:
                    regs.append((module, "post", self._block_output(lp.index, key)))
            for name in lp.norms:
                norm = resolve(self.model, name)
                self._probes[name] = probe_norm(norm, self.hidden)     # before any hook is on it
                regs.append((norm, "post", self._layer_norm(lp.index, name)))
        final = resolve(self.model, self.anatomy.final_norm)
        if final is not None:
            self._probes[self.anatomy.final_norm] = probe_norm(final, self.hidden)
            regs.append((final, "post", self._final_norm))
        return regs

    # ---- hooks ------------------------------------------------------------------------------
    def _layer_input(self, module, args, kwargs=None):
        if self.mine():
            hidden = args[0] if args else (kwargs or {}).get("hidden_states")
            self.resid[0] = self.offload(hidden[0])

    def _layer_output(self, index: int):
        def hook(module, args, output):
            if not self.mine():
                return
            live = self._live.pop(index, {})
            if "mlp" in live:
                self.mlp[index] = self.offload(live["mlp"])
            self.resid[index + 1] = self.offload(_first(output)[0])
        return hook

    def _z_hook(self, index: int):
        def hook(module, args, kwargs=None):
            if self.mine():
                z = args[0] if args else (kwargs or {}).get("input")
                self.z[index] = self.offload(z[0])                          # (T, H·hd)
        return hook

    def _block_output(self, index: int, key: str):
        def hook(module, args, output):
            if self.mine():
                self._live.setdefault(index, {})[key] = _first(output)[0]   # (T, d), until the layer ends
        return hook

    def _layer_norm(self, index: int, name: str):
        def hook(module, args, output):
            if not self.mine() or not args:
                return
            live = self._live.get(index, {})
            x, y = args[0][0], _first(output)[0]
            if "attn" in live and x.data_ptr() == live["attn"].data_ptr():
                gain, bias, center = self._probes[name]
                self.post_attn[index] = NormLinear(fit_scale(x, y, gain, bias, center), gain, bias, center)
            elif "mlp" in live and x.data_ptr() == live["mlp"].data_ptr():
                live["mlp"] = y                                               # the MLP's share is the norm's output
        return hook

    def _final_norm(self, module, args, output):
        if self.mine() and args:
            x, y = args[0][0], _first(output)[0]
            gain, bias, center = self._probes[self.anatomy.final_norm]
            self.final = NormLinear(fit_scale(x, y, gain, bias, center), gain, bias, center)
            self.final_out = y

    def value_hook(self, module: nn.Module, value: torch.Tensor) -> None:
        """Called by the attention function with (B, KV, T, hd) values."""
        layer = self._attn_layer.get(id(module), getattr(module, "layer_idx", None))
        if layer is not None and self.mine():
            self.values[layer] = self.offload(value[0])

    # ---- after the forward ------------------------------------------------------------------
    @torch.inference_mode()
    def assemble(self, token_ids: torch.Tensor, last_logits: torch.Tensor | None, kv_head_of: list[int],
                 extra_tokens: list[int] | None = None, final_softcap: float | None = None) -> Components | None:
        missing = [i for i, t in enumerate(self.z) if t is None] + [i for i, t in enumerate(self.mlp) if t is None]
        if missing or any(r is None for r in self.resid) or any(p is None for p in self.o_proj):
            return None
        n_layers, t = len(self.z), self.z[0].shape[0]
        z = torch.stack(self.z).view(n_layers, t, self.n_heads, -1)        # (L, T, H, hd)
        head_dim = z.shape[-1]
        w_o, b_o = [], []
        for proj in self.o_proj:
            w = dense_weight(proj)                                           # (d, H·hd)
            w_o.append(w.t().reshape(self.n_heads, head_dim, -1).to(z.dtype).cpu())
            b = getattr(proj, "bias", None)
            b_o.append(b.detach().float().cpu() if isinstance(b, torch.Tensor) else torch.zeros(w.shape[0]))
        values = torch.stack(self.values) if all(v is not None for v in self.values) else None
        predicted, ids, rows, bias = self._unembedding(token_ids, last_logits, extra_tokens or [])
        notes = [] if values is not None else ["attention values were not recorded: routes need the "
                                               "attention interface"]
        return Components(
            resid=torch.stack(self.resid), z=z, w_o=torch.stack(w_o),
            b_o=torch.stack(b_o) if any(b.abs().max() > 0 for b in b_o) else None,
            mlp=torch.stack(self.mlp), values=values, attn_post_norm=list(self.post_attn),
            final_norm=self.final, unembed_ids=ids, unembed_rows=rows, unembed_bias=bias,
            predicted=predicted, kv_head_of=list(kv_head_of), final_softcap=final_softcap, notes=notes)

    def _unembedding(self, token_ids: torch.Tensor, last_logits: torch.Tensor | None, extra: list[int]):
        """Top prediction at every position (blocks through the LM head) and the LM-head rows of
        the tokens attribution may target: predictions, actual next tokens, top-20 at the end."""
        head = resolve(self.model, self.anatomy.lm_head)
        t = int(token_ids.shape[0])
        predicted = torch.zeros(t, dtype=torch.long)
        if head is not None and self.final_out is not None:
            vocab = _out_features(head) or 1
            rows = max(1, (1 << 24) // vocab)
            project = head
            if self.final_out.device.type == "cpu" and self.final_out.dtype != torch.float32:
                # CPU half-precision matmuls have no fast kernels: one float32 copy of the head is far cheaper
                weight, bias = dense_weight(head), getattr(head, "bias", None)
                bias = bias.detach().float() if isinstance(bias, torch.Tensor) else None
                project = lambda x: nn.functional.linear(x.float(), weight, bias)  # noqa: E731
            for r0 in range(0, t, rows):
                predicted[r0: r0 + rows] = project(self.final_out[r0: r0 + rows]).argmax(-1).cpu()
        wanted = set(predicted.tolist()) | set(token_ids[1:].tolist()) | set(int(i) for i in extra)
        if last_logits is not None:
            wanted |= set(last_logits.topk(min(20, last_logits.numel())).indices.tolist())
        ids = torch.tensor(sorted(wanted), dtype=torch.long)
        if head is None:
            return predicted, ids[:0], torch.zeros(0, self.hidden), None
        weight = head.weight
        if getattr(weight, "quant_state", None) is not None or getattr(weight, "SCB", None) is not None:
            rows_t = dense_weight(head)[ids]
        else:
            rows_t = weight.detach()[ids.to(weight.device)].float().cpu()
        b = getattr(head, "bias", None)
        bias = b.detach()[ids.to(b.device)].float().cpu() if isinstance(b, torch.Tensor) else None
        self.final_out = None
        return predicted, ids, rows_t, bias


__all__ = ["Components", "ComponentsRecorder", "NormLinear", "components_bytes", "dense_weight",
           "find_output_projection", "probe_norm", "fit_scale"]


def start_components(model: nn.Module, anatomy: Anatomy, recorder, offload, budget: int,
                     sizes: tuple[int, int, int, int, int, int, int]) -> tuple[ComponentsRecorder | None, str | None]:
    """A recorder wired to `recorder` (the attention function hands it the values), or a note
    saying why components are left out. sizes = (layers, T, hidden, heads, kv heads, head dim,
    bytes per activation)."""
    n_layers, t, hidden, n_heads, n_kv, head_dim, act_bytes = sizes
    need = components_bytes(n_layers, t, hidden, n_heads, n_kv, head_dim, act_bytes)
    if need > budget:
        return None, (f"components left out: they need {need / 2**30:.2f} GiB, over the memory budget "
                      f"of {budget / 2**30:.2f} GiB")
    comps = ComponentsRecorder(model, anatomy, n_heads, hidden, lambda: _active() is recorder, offload)
    recorder.on_value = comps.value_hook
    return comps, None


def _active():
    from explorer.record.attention_fn import active_recorder
    return active_recorder()


# --------------------------------------------------------------------------------------------
# Files: flat tensors + JSON metadata, for explorer/record/capture_file.py
# --------------------------------------------------------------------------------------------

_TENSORS = ("resid", "z", "w_o", "b_o", "mlp", "values", "unembed_ids", "unembed_rows", "unembed_bias", "predicted")


def components_to_file(comp: Components, prefix: str = "comp.") -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors keyed under `prefix` and the JSON-able rest."""
    tensors = {prefix + k: getattr(comp, k) for k in _TENSORS if getattr(comp, k) is not None}
    norms = {"final": comp.final_norm, **{str(i): n for i, n in enumerate(comp.attn_post_norm) if n is not None}}
    meta = {"kv_head_of": comp.kv_head_of, "final_softcap": comp.final_softcap, "notes": comp.notes,
            "norms": {k: {"center": n.center, "bias": n.bias is not None} for k, n in norms.items() if n is not None}}
    for key, norm in norms.items():
        if norm is None:
            continue
        tensors.update({f"{prefix}norm.{key}.scale": norm.scale, f"{prefix}norm.{key}.gain": norm.gain})
        if norm.bias is not None:
            tensors[f"{prefix}norm.{key}.bias"] = norm.bias
    return tensors, meta


def components_from_file(get: Callable[[str], torch.Tensor | None], meta: dict, prefix: str = "comp.") -> Components:
    """Inverse of components_to_file; `get(key)` returns a stored tensor or None."""
    norms = {k: NormLinear(get(f"{prefix}norm.{k}.scale"), get(f"{prefix}norm.{k}.gain"),
                           get(f"{prefix}norm.{k}.bias"), m["center"]) for k, m in meta["norms"].items()}
    fields = {k: get(prefix + k) for k in _TENSORS}
    n_layers = int(fields["z"].shape[0])
    return Components(**fields, attn_post_norm=[norms.get(str(i)) for i in range(n_layers)],
                      final_norm=norms.get("final"), kv_head_of=meta["kv_head_of"],
                      final_softcap=meta["final_softcap"], notes=meta["notes"])
