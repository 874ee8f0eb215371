"""What each head and each MLP writes into the residual stream (the capture part "components"), as
plain data, and its form in capture files; explorer/record/components_recorder.py records it.

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

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch


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

    def cpu(self) -> NormLinear:
        return NormLinear(self.scale.cpu(), self.gain.cpu(), self.bias.cpu() if self.bias is not None else None,
                          self.center)


_MOVING = threading.Lock()


@dataclass
class Components:
    """Every layer's residual stream split into heads, attention bias, MLP and what is left.

    Layer l reads resid[l] and writes resid[l + 1]. Tensors are in the model's compute dtype,
    except the small float32 ones (norm linearisations, unembedding rows). Recorded on a GPU with
    room to spare, everything stays there (moving ~3 GB to the host would double the capture's
    time), and the analyses run there; `on_host()` moves it all once, in place, for a file or a
    caller that wants host tensors. W_o is read once per model and shared by its captures.
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
    def on_device(self) -> bool:
        """Whether some activations still live on an accelerator (see on_host)."""
        return self.z.device.type != "cpu" or self.resid.device.type != "cpu"

    def on_host(self) -> Components:
        """Move every tensor to host memory, in place, once; returns self (saving a file does)."""
        if not self.on_device:
            return self
        with _MOVING:
            for f in fields(self):
                value = getattr(self, f.name)
                if isinstance(value, torch.Tensor):
                    setattr(self, f.name, value.cpu())
            self.attn_post_norm = [n.cpu() if n is not None else None for n in self.attn_post_norm]
            self.final_norm = self.final_norm.cpu() if self.final_norm is not None else None
        return self

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
# Files: flat tensors + JSON metadata, for explorer/record/capture_file.py
# --------------------------------------------------------------------------------------------

_TENSORS = ("resid", "z", "w_o", "b_o", "mlp", "values", "unembed_ids", "unembed_rows", "unembed_bias", "predicted")


def components_to_file(comp: Components, prefix: str = "comp.") -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors keyed under `prefix` and the JSON-able rest."""
    comp = comp.on_host()
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


__all__ = ["Components", "NormLinear", "components_from_file", "components_to_file"]
