"""The residual stream as the internals views show it: norms, norm modules, contributions, PCA.

Pure functions of a Capture (plus a screen budget); the Readout memoises them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analyse.pca import Projection, pca
from explorer.record.capture import Capture
from explorer.views.pooling import MAX_SIDE, Span, block_spans, pool_factor, pool_mean


@dataclass
class ResidualNorms:
    """L2 norm of the residual stream entering layer 0 and after each kept layer."""
    z: np.ndarray            # (R, n) float32
    row_names: list[str]     # "embeddings", "layer 0", ...
    row_layers: list[int]    # -1 for the embeddings
    spans: list[Span]
    factor: int


@dataclass
class NormRow:
    """One normalisation module, located by layer and role ("input_layernorm", "final norm")."""
    name: str
    layer: int               # decoder layer; num_layers for the final norm
    role: str
    input_rms: np.ndarray    # (T,) float32
    output_mean: np.ndarray  # (T,)
    output_std: np.ndarray   # (T,)
    weight: np.ndarray | None  # (d,) float32 learned gain


def residual_norms(cap: Capture, max_side: int = MAX_SIDE) -> ResidualNorms:
    rows, names, layers = [], [], []
    if cap.embeddings is not None:
        rows.append(torch.linalg.vector_norm(cap.embeddings.float(), dim=-1))          # (T,)
        names.append("embeddings")
        layers.append(-1)
    if cap.residual is not None:
        norms = torch.linalg.vector_norm(cap.residual.float(), dim=-1)                  # (R, T)
        rows.extend(norms)
        names.extend(f"layer {l}" for l in cap.residual_layers)
        layers.extend(cap.residual_layers)
    if not rows:
        raise LookupError("this capture holds no residual stream")
    z = torch.stack(rows)                                                               # (R, T)
    factor = pool_factor(cap.num_tokens, max_side)
    return ResidualNorms(pool_mean(z, factor).numpy(), names, layers, block_spans(cap.num_tokens, factor), factor)


def norm_rows(cap: Capture) -> list[NormRow]:
    """Every captured norm module, with its layer and role found from the capture's anatomy."""
    where: dict[str, tuple[int, str]] = {}
    for lp in cap.anatomy.layers:
        for name in lp.norms:
            role = name[len(lp.name) + 1:] if name.startswith(lp.name + ".") else name.rsplit(".", 1)[-1]
            where[name] = (lp.index, role)
    if cap.anatomy.final_norm:
        where[cap.anatomy.final_norm] = (cap.num_layers, "final norm")
    rows = []
    for name, stats in cap.norms.items():
        layer, role = where.get(name, (cap.num_layers, name.rsplit(".", 1)[-1]))
        rows.append(NormRow(name, layer, role, stats.input_rms.float().numpy(),
                            stats.output_mean.float().numpy(), stats.output_std.float().numpy(),
                            None if stats.weight is None else stats.weight.float().numpy()))
    return rows


def contributions(cap: Capture) -> tuple[np.ndarray, np.ndarray] | None:
    """(attention, MLP) output norms, each (L, T) float32, or None when not captured."""
    if cap.attn_out_norm is None or cap.mlp_out_norm is None:
        return None
    return cap.attn_out_norm.float().numpy(), cap.mlp_out_norm.float().numpy()


def projection(cap: Capture, layer: int | None, drop_first: bool = False, normalise: bool = False) -> Projection:
    """PCA of the input embeddings (layer None) or of the hidden states after `layer`.

    normalise: divide each vector by its RMS first, as the next norm module does. Without it a
    few tokens with massive activations take the whole first component.
    """
    if layer is None:
        if cap.embeddings is None:
            raise LookupError("this capture holds no input embeddings")
        vectors = cap.embeddings
    else:
        if cap.residual is None or layer not in cap.residual_layers:
            raise LookupError(f"the residual stream after layer {layer} was not captured")
        vectors = cap.residual[cap.residual_layers.index(layer)]                      # (T, d)
    if normalise:
        v = vectors.float()                                                            # (T, d)
        vectors = v / v.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
    return pca(vectors, k=2, exclude=(0,) if drop_first and cap.num_tokens > 2 else ())


__all__ = ["NormRow", "ResidualNorms", "contributions", "norm_rows", "projection", "residual_norms"]
