"""A capture's attention, recomputed on demand from the Q/K it kept: the entry points the views,
the CLI and the API call.

Why recompute: probabilities for one (layer, head) come back exactly as eager computes them
(softmax(QKᵀ·scale, softcapped, + mask)), and summaries, pooled maps and windows are computed in
tiles, so no layers × heads × T² tensor (nor one head's T²) ever exists at long prompts.
The maths lives by meaning in three modules, re-exported here for the store-level callers
(batches, comparisons, routes):
  attention_rows  one layer on the compute device: scores and probability blocks;
  attention_maps  full maps, block-pooled maps and full-resolution windows;
  head_stats      per-head summaries (online softmax in tiles, or one fused kernel per layer).
"""
from __future__ import annotations

import torch

from explorer.analyse.attention_maps import layer_probabilities, pooled, probabilities, window
from explorer.analyse.attention_rows import PreparedLayer, RowSource, StoredRows, block_probs, layer_rows
from explorer.analyse.derived import Derived, HeadSummaries
from explorer.analyse.head_stats import blockwise_summaries, fused_summaries, online_summaries, summaries
from explorer.record.attention_store import AttentionMissing, AttentionStore, LayerNotKept
from explorer.record.capture_data import Capture


def _store(capture: Capture) -> AttentionStore:
    if capture.attention is None or not capture.attention.layers:
        raise AttentionMissing("This capture holds no attention (not requested, over the memory budget, or the "
                               "model does not dispatch through transformers' attention interface).")
    return capture.attention


def attention_map(capture: Capture, layer: int, head: int) -> torch.Tensor:
    """(T, T) float32 probabilities of one head; row i is query i. Equals eager output.
    T² floats: past a few thousand tokens, views should ask for attention_map_pooled or
    attention_window. A layer whose Q/K were not kept raises LayerNotKept saying why."""
    return probabilities(_store(capture), layer, head)


def attention_map_pooled(capture: Capture, layer: int, head: int, max_size: int = 256) -> tuple[torch.Tensor, int]:
    """(n, n) with n ≤ max_size, block-pooled (rows still sum to 1), and tokens per block."""
    return pooled(_store(capture), layer, head, max_size)


def attention_window(capture: Capture, layer: int, head: int, rows: tuple[int, int],
                     keys: tuple[int, int]) -> torch.Tensor:
    """(rows, keys) float32 full-resolution probabilities: "what does position 90,000 attend to?"
    at any prompt length, without the full map."""
    return window(_store(capture), layer, head, rows, keys)


def capture_head_summaries(capture: Capture, derived: Derived | None = None) -> HeadSummaries:
    """Entropy, first-token attention and look-back per (layer, head, query) of a capture; computed
    once and kept in `derived` (beside the capture; a file saved with it carries them)."""
    if derived is not None and derived.summaries is not None:
        return derived.summaries
    result = summaries(_store(capture))
    if derived is not None:
        derived.summaries = result
    return result


__all__ = ["AttentionMissing", "HeadSummaries", "LayerNotKept", "PreparedLayer", "RowSource", "StoredRows",
           "attention_map", "attention_map_pooled", "attention_window", "block_probs", "blockwise_summaries",
           "capture_head_summaries", "fused_summaries", "layer_probabilities", "online_summaries", "pooled", "layer_rows",
           "probabilities", "summaries", "window"]
