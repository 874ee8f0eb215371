"""Attention as the internals views show it: one head's map, every head as tiles, one token's row.

Pure functions of a Capture (plus a screen budget); the Readout memoises them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analyse.attention import attention_map, attention_map_pooled, block_probs, capture_head_summaries, pooled
from explorer.analyse.derived import Derived
from explorer.record.capture_data import Capture
from explorer.views.pooling import MAX_SIDE, Span, block_spans, clip_window, pool_factor, pool_sum


@dataclass
class AttentionView:
    """One head's map, full resolution, pooled, or a full-resolution window of it."""
    layer: int
    head: int
    kv_head: int
    z: np.ndarray            # (n_q, n_k) float32; row = query cell, column = key cell
    q_spans: list[Span]
    k_spans: list[Span]
    factor: int              # tokens per cell (1 = every token)
    window: bool             # True: a crop of the full map


@dataclass
class Overview:
    """Every (layer, head) map pooled to a small tile, for small multiples."""
    tiles: np.ndarray        # (L, H, n, n) float32
    layers: list[int]
    factor: int              # tokens per tile cell
    kv_head_of: list[int]


@dataclass
class TokenAttention:
    """Where one query token looks, layer by layer."""
    token: int
    head: int | None         # None: mean over the layer's heads
    z: np.ndarray            # (L, n_k) float32, each row sums to 1 (pooled by summing)
    layers: list[int]
    k_spans: list[Span]
    factor: int


def attention_view(cap: Capture, layer: int, head: int, q_window: Span | None = None,
                   k_window: Span | None = None, max_side: int = MAX_SIDE) -> AttentionView:
    """The head's map: every token when the prompt fits max_side, else pooled; a window
    (queries and keys, each at most max_side wide) is always full resolution."""
    t = cap.num_tokens
    kv = cap.kv_head_of[head]
    if q_window is None and k_window is None:
        if t <= max_side:
            z = attention_map(cap, layer, head)                                # (T, T)
            spans = block_spans(t, 1)
            return AttentionView(layer, head, kv, z.numpy(), spans, spans, 1, False)
        pooled, factor = attention_map_pooled(cap, layer, head, max_side)
        spans = block_spans(t, factor)
        return AttentionView(layer, head, kv, pooled.numpy(), spans, spans, factor, False)
    q0, q1 = clip_window(q_window, t, max_side)
    k0, k1 = clip_window(k_window, t, max_side)
    probs, _ = block_probs(cap.attention, layer, [head], q0, q1, trim_keys=False)      # (1, q, T)
    z = probs[0, :, k0:k1].cpu().contiguous()                                         # (q, k)
    return AttentionView(layer, head, kv, z.numpy(), block_spans(q1, 1)[q0:], block_spans(k1, 1)[k0:], 1, True)


def overview(cap: Capture, tile: int) -> Overview:
    """All layers × heads as tiles of at most `tile` cells a side."""
    factor = pool_factor(cap.num_tokens, tile)
    tiles = torch.stack([torch.stack([pooled(cap.attention, layer, h, tile)[0] for h in range(cap.num_heads)])
                         for layer in cap.attention_layers])                                 # (L, H, n, n)
    return Overview(tiles.numpy(), list(cap.attention_layers), factor, list(cap.kv_head_of))


def summary_grids(cap: Capture, results: Derived, token: int | None = None) -> dict[str, np.ndarray]:
    """entropy / first_token / lookback as (L, H) float32 grids: means over queries, or at one query.
    The per-query summaries behind them are computed once and kept in `results`."""
    s = capture_head_summaries(cap, results)
    if token is None:
        return {k: v.numpy().astype(np.float32) for k, v in s.per_head().items()}
    return {"entropy": s.entropy[..., token].numpy(), "first_token": s.first_token[..., token].numpy(),
            "lookback": s.lookback[..., token].numpy()}


def token_attention(cap: Capture, token: int, head: int | None = None, max_side: int = MAX_SIDE) -> TokenAttention:
    """Row `token` of every layer's attention (one head, or the mean over heads)."""
    heads = list(range(cap.num_heads)) if head is None else [head]
    rows = []
    for layer in cap.attention_layers:
        p, _ = block_probs(cap.attention, layer, heads, token, token + 1, trim_keys=False)   # (h, 1, T)
        rows.append(p[:, 0].mean(0).cpu())                                                  # (T,)
    z = torch.stack(rows)                                                                     # (L, T)
    factor = pool_factor(cap.num_tokens, max_side)
    return TokenAttention(token, head, pool_sum(z, factor).numpy(), list(cap.attention_layers),
                          block_spans(cap.num_tokens, factor), factor)


__all__ = ["AttentionView", "Overview", "TokenAttention", "attention_view", "overview", "summary_grids",
           "token_attention"]
