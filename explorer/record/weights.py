"""Reading a model's linear maps as plain tensors: dense weights (4-bit included), each head's
slice of the attention output projection, and norms probed into (gain, bias, centring).

Why cached per model: dequantising every output projection and probing every norm costs a
pass over the weights and a device round trip per norm. The weights of a loaded model do not
change, so it is paid once per model object (weakly keyed: a replaced model frees its cache),
not once per capture.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

_OUT_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "out")

# model -> {key: (w_o, b_o)}; norm module -> {(device, d): (gain, bias, center)}
_SLICES: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def dense_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) float32 weight of a Linear, a GPT-2 Conv1D, or a bitsandbytes 4-/8-bit Linear."""
    weight = module.weight
    quant_state = getattr(weight, "quant_state", None)
    if getattr(quant_state, "packing_format_for_cpu", False):
        return _probed_weight(module)
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


@torch.inference_mode()
def _probed_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) float32 weight read by running the layer on the identity matrix.

    Why: on a CPU with AVX-512 bf16, bitsandbytes repacks a 4-bit weight into a kernel-specific
    layout at its first forward, and `dequantize_4bit` on that layout returns garbage. Each
    output of x = I has a single non-zero term, so this gives exactly the weights the forward
    uses, whatever their layout.
    """
    n_in = int(module.in_features)
    eye = torch.eye(n_in, dtype=getattr(module, "compute_dtype", None) or torch.float32,
                    device=module.weight.device)                                # (in, in)
    out = module(eye).float()                                                   # (in, out) = W^T + b
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        out = out - bias.float()
    return out.t().contiguous()


def out_features(module: nn.Module) -> int | None:
    if type(module).__name__ == "Conv1D":
        return int(module.nf)
    return getattr(module, "out_features", None)


def find_output_projection(attention: nn.Module, hidden: int) -> str | None:
    """The attention module's output projection: a linear child writing `hidden` features, by
    conventional name first, else the last such child registered."""
    found = [(n, m) for n, m in attention.named_modules()
             if n and hasattr(m, "weight") and getattr(m.weight, "dim", lambda: 0)() == 2
             and out_features(m) == hidden]
    for name, _ in found:
        if name.rsplit(".", 1)[-1] in _OUT_NAMES:
            return name
    return found[-1][0] if found else None


@torch.inference_mode()
def output_slices(model: nn.Module, projections: list[nn.Module], n_heads: int, dtype: torch.dtype,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(w_o (L, H, hd, d) in `dtype` on `device`, b_o (L, d) float32 or None when every bias is 0).

    Each head's slice of every layer's output projection, dequantised once per model and shared
    by its captures (read-only: nothing writes into a Components' tensors).
    """
    key = (tuple(id(p) for p in projections), n_heads, dtype, str(device))
    per_model = _SLICES.setdefault(model, {})
    if key in per_model:
        return per_model[key]
    w_o: torch.Tensor | None = None
    biases = []
    for i, proj in enumerate(projections):
        w = dense_weight(proj)                                               # (d, H·hd) float32
        d = w.shape[0]
        if w_o is None:
            w_o = torch.empty((len(projections), n_heads, w.shape[1] // n_heads, d), dtype=dtype, device=device)
        w_o[i].copy_(w.t().reshape(n_heads, -1, d))
        b = getattr(proj, "bias", None)
        biases.append(b.detach().float().to(device) if isinstance(b, torch.Tensor) else torch.zeros(d, device=device))
    b_o = torch.stack(biases) if biases else None                           # (L, d)
    if b_o is not None and not bool(b_o.abs().max() > 0):
        b_o = None
    per_model[key] = (w_o, b_o)
    return w_o, b_o


def first_output(output) -> torch.Tensor:
    """A module's main output tensor (the first element of a tuple output)."""
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.inference_mode()
def probe_norm(module: nn.Module, d: int) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(gain, bias, center) of a LayerNorm- or RMSNorm-like module, found by running it on probes.

    Why probes: RMSNorm variants store their scale as w or 1 + w, LayerNorms centre, some have a
    bias; running the module on 0, on a constant and on an alternating vector tells all of it
    without a per-family table. Any constant factor (eps) is absorbed by the fitted scale.
    Returned on CPU, float32.
    """
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    probes = torch.stack([torch.zeros(d), torch.ones(d), (-1.0) ** torch.arange(d, dtype=torch.float32)])
    run = lambda x: first_output(module(x.to(device=device, dtype=dtype)[None]))[0].float().cpu()  # noqa: E731 - a one-line probe
    bias, on_ones, on_alt = run(probes)                                        # one round trip, (3, d)
    alt = probes[2]
    center = bool((on_ones - bias).abs().max() <= 1e-3 * (on_alt - bias).abs().max())
    p = alt - alt.mean() if center else alt                                    # alt is already centred when d is even
    out_p = on_alt if torch.equal(p, alt) else run(p[None])[0]
    gain = (out_p - bias) * p.square().mean().sqrt() / p
    return gain, (bias if bias.abs().max() > 0 else None), center


def probed_norm(module: nn.Module, d: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """probe_norm remembered per module, with the gain and bias already on `device`: fitting a
    scale inside a hook must not copy them there (a host-to-device copy waits for the stream)."""
    per_device = _PROBES.setdefault(module, {})
    found = per_device.get(("cpu", d))
    if found is None:
        found = per_device[("cpu", d)] = probe_norm(module, d)
    key = (str(device), d)
    if key not in per_device:
        gain, bias, center = found
        per_device[key] = (gain.to(device), bias.to(device) if bias is not None else None, center)
    return per_device[key]


def fit_scale(x: torch.Tensor, y: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor | None,
              center: bool) -> torch.Tensor:
    """(T,) float32 per-token scale s with y ≈ s · gain ⊙ P(x) + bias (least squares, exact for a
    norm), left on x's device: reading it back here would stall the forward at every layer."""
    x = x.float()
    if center:
        x = x - x.mean(-1, keepdim=True)
    gx = x * gain.to(x.device)
    target = y.float() - (bias.to(x.device) if bias is not None else 0.0)
    return (target * gx).sum(-1) / gx.square().sum(-1).clamp_min(1e-30)


__all__ = ["dense_weight", "find_output_projection", "first_output", "fit_scale", "out_features", "output_slices",
           "probe_norm", "probed_norm"]
