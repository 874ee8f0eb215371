"""Attention maps of one head: the full map (short prompts), a block-pooled screen-sized map and a
full-resolution window (any prompt length), recomputed from recorded Q/K in tiles.

Why tiles: at 128k tokens one head's map is 64 GiB in float32. The pooled map sums probabilities
into its cells one block of query rows at a time; a window normalises its rows with a
log-sum-exp taken over tiles of keys, then computes only the keys it shows.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from explorer.analyse.attention_rows import Device, PreparedLayer, RowSource, layer_rows
from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.attention_store import AttentionStore

KEY_TILE = 8192


def to_host(t: torch.Tensor) -> torch.Tensor:
    """To CPU through pinned memory when on CUDA: pageable copies of large maps are several
    times slower."""
    if t.device.type != "cuda":
        return t.cpu() if t.device.type != "cpu" else t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t)
    return out


def probabilities(store: AttentionStore, layer: int, head: int, batch: int = 0,
                  device: Device = None) -> torch.Tensor:
    """The full (Tq, Tk) map of one head, float32 on CPU. Equals eager output_attentions."""
    prep = layer_rows(store, layer, [head], batch, device)
    probs, n = prep.block(0, prep.t_q)
    full = probs[0] if n == prep.t_k else nn.functional.pad(probs[0], (0, prep.t_k - n))
    return to_host(full)


def layer_probabilities(store: AttentionStore, layer: int, batch: int = 0) -> torch.Tensor:
    """All heads of one layer, (H, Tq, Tk) float32 on CPU; for tests and small prompts."""
    prep = layer_rows(store, layer, None, batch)
    probs, n = prep.block(0, prep.t_q)
    out = torch.zeros(store.num_heads, prep.t_q, prep.t_k, dtype=torch.float32)
    out[..., :n] = probs.cpu()
    return out


def pooled(store: AttentionStore, layer: int, head: int, max_size: int = 256, batch: int = 0,
           device: Device = None, block_elements: int = BLOCK_ELEMENTS) -> tuple[torch.Tensor, int]:
    """A block-pooled map of at most max_size × max_size, for long prompts.

    Cell (i, j) is the mean over the queries of block i of the total probability on the keys
    of block j, so each pooled row still sums to 1. Returns (map (n, n) float32 on CPU, factor)
    where factor is the number of tokens per block; the last block may be partial.
    """
    t_q, t_k = store.sizes(layer)
    factor = max(1, math.ceil(max(t_q, t_k) / max_size))
    if factor == 1:
        return probabilities(store, layer, head, batch, device), 1
    prep = layer_rows(store, layer, [head], batch, device)
    return pool_rows(prep, factor, block_elements)[0].cpu(), factor


def pool_rows(prep: RowSource, factor: int, block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """(h, n_q, n_k) float32 on prep's device: blocks of `factor` query rows at a time (rows per
    step a multiple of factor), each block's probabilities summed over key blocks and averaged
    over its queries. Never more than block_elements probabilities at once."""
    t_q, t_k, dev = prep.t_q, prep.t_k, prep.device
    h = len(prep.heads)
    n_q, n_k = math.ceil(t_q / factor), math.ceil(t_k / factor)
    rows = max(factor, (block_elements // max(h * t_k, 1)) // factor * factor)
    out = torch.zeros(h, n_q, n_k, dtype=torch.float32, device=dev)
    for r0 in range(0, t_q, rows):
        r1 = min(t_q, r0 + rows)
        probs, n = prep.block(r0, r1)                                                 # (h, b, n)
        b, whole = r1 - r0, n // factor * factor
        cells = probs[..., :whole].view(h, b, whole // factor, factor).sum(-1)        # (h, b, n // f)
        if whole < n:                                                                  # a partial last key block
            cells = torch.cat([cells, probs[..., whole:].sum(-1, keepdim=True)], dim=-1)
        cols, top, full_rows = cells.shape[-1], r0 // factor, b // factor
        if full_rows:
            out[:, top: top + full_rows, :cols] = cells[:, :full_rows * factor].view(h, full_rows, factor, cols).sum(2)
        if b % factor:                                                                 # the prompt's last, partial block
            out[:, top + full_rows, :cols] = cells[:, full_rows * factor:].sum(1)
    counts = torch.full((n_q,), float(factor), device=dev)
    counts[-1] = t_q - factor * (n_q - 1)
    return out / counts[:, None]               # (h, n_q, n_k)


def row_logsumexp(prep: PreparedLayer, row0: int, row1: int, key_tile: int = KEY_TILE) -> torch.Tensor:
    """(h, rows) log Σ exp(score) over every key each row may see, walked in tiles of keys."""
    lo, hi = prep.key_span(row0, row1)
    m = s = None
    for k0 in range(lo, hi, key_tile):
        x = prep.scores(row0, row1, k0, min(hi, k0 + key_tile))                         # (h, b, n)
        tile_max = x.amax(-1)
        m_new = tile_max if m is None else torch.maximum(m, tile_max)
        part = torch.exp(x - m_new[..., None]).sum(-1)
        s = part if s is None else s * torch.exp(m - m_new) + part
        m = m_new
    return m + torch.log(s)


def window(store: AttentionStore, layer: int, head: int, rows: tuple[int, int], keys: tuple[int, int],
           batch: int = 0, device: Device = None, block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """Full-resolution probabilities of query rows [r0, r1) on keys [k0, k1) of one head, float32
    on CPU: each row normalised over all its keys (a log-sum-exp in tiles), only the shown keys
    computed. Equals attention_map(...)[r0:r1, k0:k1]."""
    prep = layer_rows(store, layer, [head], batch, device)
    (r0, r1), (k0, k1) = rows, keys
    r0, r1 = max(0, r0), min(prep.t_q, r1)
    k0, k1 = max(0, k0), min(prep.t_k, k1)
    if not isinstance(prep, PreparedLayer):
        return prep.block(r0, r1, trim_keys=False)[0][0, :, k0:k1].cpu()
    out = torch.empty(r1 - r0, max(0, k1 - k0), dtype=torch.float32, device=prep.device)
    step = max(1, block_elements // max(1, max(k1 - k0, KEY_TILE)))
    for a in range(r0, r1, step):
        b = min(r1, a + step)
        lse = row_logsumexp(prep, a, b)                                                # (1, rows)
        out[a - r0: b - r0] = torch.exp(prep.scores(a, b, k0, k1) - lse[..., None])[0]
    return to_host(out)


__all__ = ["layer_probabilities", "pool_rows", "pooled", "probabilities", "row_logsumexp", "to_host", "window"]
