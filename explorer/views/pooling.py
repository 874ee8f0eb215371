"""Screen-sized grids over token positions: block spans, pooling, windows.

Why: heatmaps keep at most MAX_SIDE cells a side. A long prompt is block-pooled (attention by
summing, so rows still sum to 1; norms by averaging); a window gives full resolution.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from explorer.model.limits import BLOCK_ELEMENTS

MAX_SIDE = 512
OVERVIEW_TILE = 16

Span = tuple[int, int]     # [start, stop) token positions one heatmap cell covers


def block_spans(n: int, factor: int) -> list[Span]:
    """Cells of `factor` tokens over n positions; the last may be partial."""
    return [(s, min(n, s + factor)) for s in range(0, n, max(1, factor))]


def pool_factor(n: int, max_side: int = MAX_SIDE) -> int:
    return max(1, math.ceil(n / max(1, max_side)))


def pool_mean(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over blocks of `factor` along the last axis (the last block may be partial)."""
    if factor <= 1:
        return x
    n = x.shape[-1]
    cells = math.ceil(n / factor)
    padded = nn.functional.pad(x, (0, cells * factor - n))
    sums = padded.reshape(*x.shape[:-1], cells, factor).sum(-1)
    return sums / block_counts(n, factor)


def pool_sum(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum over blocks of `factor` along the last axis: keeps attention rows summing to 1."""
    if factor <= 1:
        return x
    n = x.shape[-1]
    cells = math.ceil(n / factor)
    return nn.functional.pad(x, (0, cells * factor - n)).reshape(*x.shape[:-1], cells, factor).sum(-1)


def block_counts(n: int, factor: int) -> torch.Tensor:
    """(cells,) float32: how many positions each block of `factor` covers (the last may be short)."""
    cells = math.ceil(n / factor)
    counts = torch.full((cells,), float(factor))
    counts[-1] = n - factor * (cells - 1)
    return counts


def clip_window(window: Span | None, num_tokens: int, max_side: int = MAX_SIDE) -> Span:
    """A valid [start, stop) of at most max_side positions; None = the last max_side positions."""
    t = num_tokens
    if window is None:
        return max(0, t - max_side), t
    a, b = sorted((int(window[0]), int(window[1])))
    a, b = max(0, min(a, t - 1)), max(1, min(b, t))
    if b <= a:
        b = a + 1
    if b - a > max_side:
        a = b - max_side
    return a, b


__all__ = ["BLOCK_ELEMENTS", "MAX_SIDE", "OVERVIEW_TILE", "Span", "block_counts", "block_spans", "clip_window",
           "pool_factor", "pool_mean", "pool_sum"]
