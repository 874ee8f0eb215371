"""Direct logit attribution: how much each head and each MLP wrote towards one token's logit.

Why "direct": the logit at position i is a linear function of the final residual x_L[i] once the
final norm is linearised at i (its per-token statistics frozen, as the logit lens reads it):

    logit_t(i) = u · x_L[i] + w_t · b_f + b_t,   u = P(s_i · g ⊙ w_t)

with w_t the LM-head row of token t, b_t its bias, g, b_f the final norm's gain and bias, s_i its
per-token scale and P the centring of a LayerNorm (identity for RMSNorm). x_L[i] is the sum of
the embedding and of every layer's parts, so each part's contribution is its dot product with u,
and the contributions plus the embedding and bias terms add up to the logit exactly. What it
leaves out is indirect effects (a head that changes what later layers do).

Computed where the components are (a GPU when the capture kept them there); results on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from explorer.record.components import Components

# --------------------------------------------------------------------------------------------
# The decomposition in residual space
# --------------------------------------------------------------------------------------------

def head_outputs(comp: Components, layer: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(H, P, d) float32: what each head adds to the residual at `positions` (default all),
    including a norm between the attention and the residual, linearised at each position."""
    z = comp.z[layer] if positions is None else comp.z[layer, positions]        # (P, H, hd)
    out = torch.einsum("phk,hkd->hpd", z.float(), comp.w_o[layer].float())       # (H, P, d)
    post = comp.attn_post_norm[layer]
    return post.apply(out, positions) if post is not None else out


def attention_bias(comp: Components, layer: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(P, d) float32: the attention block's share that belongs to no head (output bias, and the
    bias of a post-attention norm)."""
    n = comp.z.shape[1] if positions is None else int(positions.numel())
    d = comp.resid.shape[-1]
    bias = comp.b_o[layer].float() if comp.b_o is not None else torch.zeros(d, device=comp.resid.device)
    post = comp.attn_post_norm[layer]
    if post is None:
        return bias.expand(n, d).clone()
    out = post.apply(bias.expand(n, d), positions)
    return out + post.bias if post.bias is not None else out


def attention_total(comp: Components, layer: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(P, d) float32: everything the attention block added (heads + bias)."""
    return head_outputs(comp, layer, positions).sum(0) + attention_bias(comp, layer, positions)


def remainder(comp: Components, layer: int, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(P, d) float32: what the layer added that is neither a head, the attention bias nor the MLP.
    Zero up to rounding on the families tested; kept as a named part so the parts always add up."""
    sel = (lambda t: t) if positions is None else (lambda t: t[positions])
    return (sel(comp.resid[layer + 1]).float() - sel(comp.resid[layer]).float()
            - attention_total(comp, layer, positions) - sel(comp.mlp[layer]).float())


# --------------------------------------------------------------------------------------------
# Direct logit attribution
# --------------------------------------------------------------------------------------------

@dataclass
class Attribution:
    """Each part's direct contribution to one token's logit at one position (logit units).

    heads + mlp + attn_bias + remainder (summed over layers) + embedding + bias == logit.
    """
    position: int
    target: int                  # token id whose logit is explained
    logit: float                 # u · x_L + bias: the model's logit before any final softcap
    heads: torch.Tensor          # (L, H) float32
    mlp: torch.Tensor            # (L,) float32
    attn_bias: torch.Tensor      # (L,) float32
    remainder: torch.Tensor      # (L,) float32
    embedding: float             # the token (and position) embedding's share
    bias: float                  # final-norm bias through the head, plus the head's own bias
    notes: list[str] = field(default_factory=list)

    def total(self) -> float:
        return float(self.heads.sum() + self.mlp.sum() + self.attn_bias.sum() + self.remainder.sum()
                     + self.embedding + self.bias)

    def ranked(self, top: int = 20) -> list[dict]:
        """The largest parts by absolute contribution: [{"part", "layer", "head", "value"}]."""
        rows = [{"part": "head", "layer": l, "head": h, "value": float(self.heads[l, h])}
                for l in range(self.heads.shape[0]) for h in range(self.heads.shape[1])]
        rows += [{"part": "mlp", "layer": l, "head": None, "value": float(v)} for l, v in enumerate(self.mlp)]
        rows += [{"part": "attention bias", "layer": l, "head": None, "value": float(v)}
                 for l, v in enumerate(self.attn_bias) if abs(float(v)) > 0]
        rows += [{"part": "other", "layer": l, "head": None, "value": float(v)}
                 for l, v in enumerate(self.remainder) if abs(float(v)) > 1e-6]
        rows.append({"part": "embedding", "layer": None, "head": None, "value": self.embedding})
        rows.sort(key=lambda r: -abs(r["value"]))
        return rows[:top]

    def to_dict(self, top: int = 20) -> dict:
        return {"position": self.position, "target": self.target, "logit": self.logit,
                "embedding": self.embedding, "bias": self.bias, "mlp": self.mlp.tolist(),
                "heads": self.heads.tolist(), "top": self.ranked(top), "notes": self.notes}


def logit_direction(comp: Components, position: int, target: int) -> tuple[torch.Tensor, float]:
    """(u (d,), constant) with logit_target(position) = u · x_L[position] + constant."""
    row, head_bias = comp.unembedding(target)
    norm = comp.final_norm
    if norm is None:
        return row.float(), head_bias
    u = row.float() * norm.gain * norm.scale[position]
    if norm.center:
        u = u - u.mean()
    const = head_bias + (float(row.float() @ norm.bias) if norm.bias is not None else 0.0)
    return u, const


def direct_logit_attribution(comp: Components, position: int = -1, target: int | None = None) -> Attribution:
    """Each head's and MLP's contribution to `target`'s logit at `position` (default: the last
    position and the model's top prediction there)."""
    t = int(comp.resid.shape[1])
    position = position % t
    target = int(comp.predicted[position]) if target is None else int(target)
    u, const = logit_direction(comp, position, target)
    pos = torch.tensor([position])
    n_layers = comp.num_layers
    dev = comp.resid.device               # where the components are: a GPU when they were kept there
    heads = torch.zeros(n_layers, comp.num_heads, device=dev)
    mlp, bias, rest = (torch.zeros(n_layers, device=dev) for _ in range(3))
    resid = comp.resid[:, position].float()                                         # (L+1, d)
    for layer in range(n_layers):
        parts = head_outputs(comp, layer, pos)[:, 0]                                 # (H, d)
        att_bias = attention_bias(comp, layer, pos)[0]
        mlp_part = comp.mlp[layer, position].float()
        heads[layer] = parts @ u
        bias[layer] = att_bias @ u
        mlp[layer] = mlp_part @ u
        rest[layer] = (resid[layer + 1] - resid[layer] - parts.sum(0) - att_bias - mlp_part) @ u
    embedding = float(comp.resid[0, position].float() @ u)
    logit = float(comp.resid[-1, position].float() @ u) + const
    notes = []
    if comp.final_softcap:
        notes.append(f"the model caps its logits (tanh, {comp.final_softcap:g}) after the LM head; "
                     "contributions explain the logit before the cap")
    return Attribution(position, target, logit, heads.cpu(), mlp.cpu(), bias.cpu(), rest.cpu(), embedding, const, notes)


__all__ = ["Attribution", "attention_bias", "attention_total", "direct_logit_attribution", "head_outputs",
           "logit_direction", "remainder"]
