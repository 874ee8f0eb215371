"""Attention maths that runs after the forward: probabilities, pooling and per-head summaries,
all recomputed from the Q/K an AttentionStore kept.

Why recompute: probabilities for one (layer, head) come back exactly as eager computes them
(softmax(QKᵀ·scale, softcapped, + mask)), and per-head summaries are computed blockwise over query
rows or by one fused kernel per layer, so no layers × heads × T² tensor ever exists.
The capture-level entries (attention_map, attention_map_pooled, capture_head_summaries) take a Capture;
the store-level ones take an AttentionStore (batches, comparisons).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.attention_store import AttentionStore, LayerAttention
from explorer.analyse.derived import Derived, HeadSummaries
from explorer.record.capture_data import Capture

Device = str | torch.device | None


# --------------------------------------------------------------------------------------------
# One layer on the compute device
# --------------------------------------------------------------------------------------------

@dataclass
class PreparedLayer:
    """One layer's Q/K on the compute device, ready for blocks of query rows."""
    rec: LayerAttention
    heads: list[int]
    q: torch.Tensor                 # (h, Tq, D) model dtype
    k: torch.Tensor                 # (kv', Tk, D) float32
    kv_local: torch.Tensor | None   # (h,) index into k per head; None: all heads, grouped
    mask: torch.Tensor | None       # (1|h, Tq, Tk) bool
    device: torch.device
    groups: int                     # query heads per KV head when kv_local is None
    event: object = None            # CUDA event after which the copies are complete

    def ready(self) -> None:
        """Make the current stream wait for a prefetch and keep its memory alive for that stream."""
        if self.event is None:
            return
        current = torch.cuda.current_stream(self.device)
        current.wait_event(self.event)
        for t in (self.q, self.k, self.mask, self.kv_local):
            if t is not None:
                t.record_stream(current)
        self.event = None

    def fusable(self) -> bool:
        """True where one fused attention kernel reproduces this layer's probabilities: no mask
        tensor, no softcap, no window cutting in, queries aligned with keys, all heads."""
        rec = self.rec
        t_q, t_k = self.q.shape[1], self.k.shape[1]
        window_ok = rec.sliding_window is None or t_k <= rec.sliding_window
        return (self.mask is None and rec.softcap is None and window_ok and t_q == t_k
                and self.kv_local is None)

    def block(self, row0: int, row1: int, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
        rec, dev = self.rec, self.device
        t_q, t_k = self.q.shape[1], self.k.shape[1]
        offset = t_k - t_q
        mask_rows = self.mask[:, row0:row1] if self.mask is not None else None       # (1|h, b, Tk)
        n = t_k
        if trim_keys:
            if mask_rows is not None:
                allowed = mask_rows.any(dim=0).any(dim=0).nonzero()
                n = int(allowed.max()) + 1 if allowed.numel() else t_k
            elif rec.causal:
                n = min(t_k, row1 + offset)
        q = self.q[:, row0:row1].to(torch.float32)                                    # (h, b, D)
        k = self.k[:, :n]                                                             # (kv', n, D)
        if self.kv_local is None:
            kv, b = k.shape[0], row1 - row0
            scores = torch.matmul(q.reshape(kv, self.groups * b, -1), k.transpose(-1, -2))
            scores = scores.view(kv * self.groups, b, n)                              # (H, b, n)
        else:
            scores = torch.matmul(q, k.index_select(0, self.kv_local).transpose(-1, -2))  # (h, b, n)
        scores = scores * rec.scaling
        if rec.softcap is not None:
            scores = torch.tanh(scores / rec.softcap) * rec.softcap
        min_value = torch.finfo(torch.float32).min
        if mask_rows is not None:
            scores = scores.masked_fill(~mask_rows[..., :n], min_value)
        elif rec.causal or rec.sliding_window:
            qpos = torch.arange(row0, row1, device=dev)[:, None] + offset
            kpos = torch.arange(n, device=dev)[None, :]
            allowed = kpos <= qpos if rec.causal else torch.ones_like(kpos <= qpos)
            if rec.sliding_window:
                allowed = allowed & (kpos > qpos - rec.sliding_window)
            scores = scores.masked_fill(~allowed, min_value)
        return torch.softmax(scores, dim=-1), n


class StoredPrepared(PreparedLayer):
    """Rows read from stored probabilities (eager fallback, explorer/record/eager_fallback.py)."""

    def __init__(self, rec: LayerAttention, heads: list[int], maps: torch.Tensor):
        t_q, t_k = maps.shape[-2:]
        super().__init__(rec=rec, heads=heads, q=maps.new_empty(len(heads), t_q, 0),
                         k=maps.new_empty(1, t_k, 0), kv_local=None, mask=None, device=maps.device, groups=1)
        self.maps = maps                                                              # (h, Tq, Tk)

    def fusable(self) -> bool:
        return False

    def block(self, row0: int, row1: int, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
        return self.maps[:, row0:row1], self.maps.shape[-1]


def _compute_device(rec: LayerAttention, device: Device) -> torch.device:
    if device is not None:
        return torch.device(device)
    dev = torch.device(rec.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return dev


def prepare(store: AttentionStore, layer: int, heads: list[int] | None = None, batch: int = 0,
            device: Device = None) -> PreparedLayer:
    """Move one layer's Q/K (and mask) for `heads` to the compute device once; blocks of
    query rows are then computed there without further transfers."""
    rec = store.layer(layer)
    maps = getattr(store, "maps", None)
    if maps is not None:                                    # eager fallback: probabilities are stored
        chosen = list(range(store.num_heads)) if heads is None else list(heads)
        return StoredPrepared(rec, chosen, maps[layer][chosen])
    dev = _compute_device(rec, device)
    all_heads = heads is None or list(heads) == list(range(store.num_heads))
    heads = list(range(store.num_heads)) if heads is None else list(heads)
    if all_heads:
        q = rec.q[batch]                                                            # (H, Tq, D)
        k = rec.k[batch]                                                            # (KV, Tk, D)
        kv_local = None
    else:
        kvs = sorted({store.kv_head_of(h) for h in heads})
        q = rec.q[batch, heads]
        k = rec.k[batch, kvs]
        kv_local = torch.tensor([kvs.index(store.kv_head_of(h)) for h in heads], device=dev)
    q = q.to(dev, non_blocking=True)
    k = k.to(dev, non_blocking=True).to(torch.float32)
    mask = None
    if rec.mask is not None:
        m = store.masks[rec.mask]
        m = m[batch if m.shape[0] > 1 else 0]                                       # (1|H, Tq, Tk)
        if m.shape[0] > 1:
            m = m[heads]
        mask = m.to(dev, non_blocking=True)
    return PreparedLayer(rec=rec, heads=heads, q=q, k=k, kv_local=kv_local, mask=mask, device=dev,
                         groups=store.num_heads // store.num_kv_heads if all_heads else 1)


# --------------------------------------------------------------------------------------------
# Probabilities
# --------------------------------------------------------------------------------------------

def block_probs(store: AttentionStore, layer: int, heads: list[int], row0: int, row1: int, batch: int = 0,
                device: Device = None, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
    """Probabilities of query rows [row0, row1) for `heads`, float32: (len(heads), rows, n_keys).
    Keys at n_keys and beyond are masked for every row of the block (causal trimming)."""
    return prepare(store, layer, heads, batch, device).block(row0, row1, trim_keys)


def probabilities(store: AttentionStore, layer: int, head: int, batch: int = 0,
                  device: Device = None) -> torch.Tensor:
    """The full (Tq, Tk) map of one head, float32 on CPU. Equals eager output_attentions."""
    prep = prepare(store, layer, [head], batch, device)
    t_q, t_k = prep.q.shape[1], prep.k.shape[1]
    probs, n = prep.block(0, t_q)
    full = probs[0] if n == t_k else nn.functional.pad(probs[0], (0, t_k - n))
    return _to_host(full)


def layer_probabilities(store: AttentionStore, layer: int, batch: int = 0) -> torch.Tensor:
    """All heads of one layer, (H, Tq, Tk) float32 on CPU; for tests and small prompts."""
    prep = prepare(store, layer, None, batch)
    t_q, t_k = prep.q.shape[1], prep.k.shape[1]
    probs, n = prep.block(0, t_q)
    out = torch.zeros(store.num_heads, t_q, t_k, dtype=torch.float32)
    out[..., :n] = probs.cpu()
    return out


def pooled(store: AttentionStore, layer: int, head: int, max_size: int = 256, batch: int = 0,
           device: Device = None, block_elements: int = BLOCK_ELEMENTS) -> tuple[torch.Tensor, int]:
    """A block-pooled map of at most max_size × max_size, for long prompts.

    Cell (i, j) is the mean over the queries of block i of the total probability on the keys
    of block j, so each pooled row still sums to 1. Returns (map (n, n) float32 on CPU, factor)
    where factor is the number of tokens per block; the last block may be partial.
    """
    rec = store.layer(layer)
    t_q, t_k = rec.q.shape[2], rec.k.shape[2]
    factor = max(1, math.ceil(max(t_q, t_k) / max_size))
    if factor == 1:
        return probabilities(store, layer, head, batch, device), 1
    prep = prepare(store, layer, [head], batch, device)
    dev = prep.device
    n_q, n_k = math.ceil(t_q / factor), math.ceil(t_k / factor)
    rows_per_block = max(factor, (block_elements // max(t_k, 1)) // factor * factor)
    out = torch.zeros(n_q, n_k, dtype=torch.float32, device=dev)
    for r0 in range(0, t_q, rows_per_block):
        r1 = min(t_q, r0 + rows_per_block)
        probs, n = prep.block(r0, r1)
        p = nn.functional.pad(probs[0], (0, n_k * factor - n))                     # (b, n_k·factor)
        p = p.view(r1 - r0, n_k, factor).sum(-1)                                    # (b, n_k)
        rows = torch.arange(r0, r1, device=dev) // factor
        out.index_add_(0, rows, p)
    counts = torch.full((n_q,), float(factor), device=dev)
    counts[-1] = t_q - factor * (n_q - 1)
    return (out / counts[:, None]).cpu(), factor


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------

def summaries(store: AttentionStore, layers: list[int] | None = None, batch: int = 0, device: Device = None,
              block_elements: int = BLOCK_ELEMENTS) -> HeadSummaries:
    """Entropy, attention on the first token and mean look-back distance per (layer, head,
    query), on each layer's own device.

    Plain causal layers go through one fused attention kernel per layer (see
    `fused_summaries`); masked or softcapped layers are computed block by block over query
    rows. On CUDA the next layer's Q/K are copied in while the current one is computed.
    """
    layers = store.layer_indices if layers is None else list(layers)
    results: list[torch.Tensor] = []                                         # each (3, H, T)
    upcoming = _fetch(store, layers[0], batch, device) if layers else None
    for li, layer in enumerate(layers):
        prep = upcoming
        upcoming = _fetch(store, layers[li + 1], batch, device) if li + 1 < len(layers) else None
        prep.ready()
        stats = fused_summaries(prep) if prep.fusable() else None
        if stats is None:
            stats = blockwise_summaries(prep, block_elements)
        results.append(stats)
    stacked = [r.cpu() for r in results]
    if not stacked:
        empty = torch.zeros(0, store.num_heads, 0)
        return HeadSummaries(layers=[], entropy=empty, first_token=empty, lookback=empty)
    all_stats = torch.stack(stacked, dim=1)                                  # (3, L, H, T)
    return HeadSummaries(layers=layers, entropy=all_stats[0], first_token=all_stats[1],
                         lookback=all_stats[2])


def _fetch(store: AttentionStore, layer: int, batch: int, device: Device) -> PreparedLayer:
    """prepare() on a side stream when the layer computes on CUDA, so copies overlap compute."""
    dev = _compute_device(store.layer(layer), device)
    if dev.type != "cuda":
        return prepare(store, layer, None, batch, dev)
    stream = _copy_stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        prep = prepare(store, layer, None, batch, dev)
        prep.event = stream.record_event()
    return prep


def blockwise_summaries(prep: PreparedLayer, block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """(3, H, T): entropy, first-token share and look-back from explicit blocks of query rows."""
    dev = prep.device
    heads = len(prep.heads)
    t_q, t_k = prep.q.shape[1], prep.k.shape[1]
    offset = t_k - t_q
    rows = max(1, block_elements // (heads * t_k))
    out = torch.zeros(3, heads, t_q, device=dev)
    for r0 in range(0, t_q, rows):
        r1 = min(t_q, r0 + rows)
        p, n = prep.block(r0, r1)                                                  # (H, b, n)
        out[0, :, r0:r1] = -torch.special.xlogy(p, p).sum(-1)
        out[1, :, r0:r1] = p[..., 0]
        dist = (torch.arange(r0, r1, device=dev)[:, None] + offset
                - torch.arange(n, device=dev)[None, :]).to(torch.float32)          # (b, n)
        out[2, :, r0:r1] = (p * dist).sum(-1)
    return out


_COPY_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}
_FUSED_BROKEN: set[str] = set()     # device types where the fused kernels raised once


def _copy_stream(device: torch.device) -> "torch.cuda.Stream":
    stream = _COPY_STREAMS.get(device)
    if stream is None:
        stream = _COPY_STREAMS[device] = torch.cuda.Stream(device=device)
    return stream


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """To CPU through pinned memory when on CUDA: pageable copies of large maps are several
    times slower."""
    if t.device.type != "cuda":
        return t.cpu() if t.device.type != "cpu" else t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t)
    return out


def _summary_dtype(prep: PreparedLayer) -> torch.dtype:
    """float32 for float32 models and on CPU (exact); on CUDA, 16-bit models get float16 tensor
    cores (10-bit mantissa, better than bfloat16) unless their queries or keys exceed its range."""
    if prep.device.type != "cuda" or prep.q.dtype == torch.float32:
        return torch.float32
    peak = max(float(prep.q.abs().amax()), float(prep.k.abs().amax()))
    return torch.float16 if peak < 3.0e4 else torch.float32


def fused_summaries(prep: PreparedLayer, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """Summaries of all heads of a plainly causal (or full) layer from one fused attention call.

    With s = scale·q·k and p = softmax(s): entropy = logsumexp(s) − Σ p·s, and Σ p·s =
    scale·q·(Σ p·k). So attention with the keys themselves as values, plus the key position
    (divided by T) appended as an extra dimension that queries ignore (their extra entries are
    0), returns Σ p·k and Σ p·j; the kernel also returns logsumexp; p₀ = exp(s₀ − logsumexp).
    Nothing of size T² is written. Returns None where the kernels are unavailable, and the
    caller falls back to explicit blocks.
    """
    dev = prep.device
    if dev.type in _FUSED_BROKEN:
        return None
    dtype = dtype or _summary_dtype(prep)
    rec = prep.rec
    q = prep.q.to(torch.float32)                                                   # (H, T, D)
    h, t, d = q.shape
    k = prep.k.repeat_interleave(prep.groups, dim=0) if prep.groups > 1 else prep.k   # (H, T, D) fp32
    extra = 8                                                                      # keeps D a multiple of 8
    pos = torch.arange(t, device=dev, dtype=torch.float32)
    qa = torch.cat([q, q.new_zeros(h, t, extra)], dim=-1)[None].to(dtype)          # (1, H, T, D+8)
    ka = torch.cat([k, (pos / t).view(1, t, 1).expand(h, t, 1), k.new_zeros(h, t, extra - 1)],
                   dim=-1)[None].to(dtype)
    try:
        if dev.type == "cuda":
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                qa, ka, ka, None, True, 0.0, rec.causal, scale=rec.scaling)[:2]
        elif dev.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                qa, ka, ka, 0.0, rec.causal, scale=rec.scaling)
        else:
            return None
    except (RuntimeError, AttributeError, NotImplementedError):
        _FUSED_BROKEN.add(dev.type)
        return None
    out = out[0].to(torch.float32)                                                 # (H, T, D+8)
    lse = lse[0, :, :t].to(torch.float32)                                          # (H, T)
    expected_ps = rec.scaling * (q * out[..., :d]).sum(-1)                         # Σ p·s
    entropy = (lse - expected_ps).clamp_min(0)
    s0 = rec.scaling * (q * k[:, :1]).sum(-1)                                      # (H, T) score on key 0
    first = torch.exp(s0 - lse).clamp_max(1)
    lookback = (pos[None] - out[..., d] * t).clamp_min(0)
    return torch.stack([entropy, first, lookback])


# --------------------------------------------------------------------------------------------
# A capture's attention
# --------------------------------------------------------------------------------------------

def _store(capture: Capture) -> AttentionStore:
    if capture.attention is None or not capture.attention.layers:
        raise LookupError("this capture holds no attention (not requested, or the model does not "
                          "dispatch through transformers' attention interface)")
    return capture.attention


def attention_map(capture: Capture, layer: int, head: int) -> torch.Tensor:
    """(T, T) float32 probabilities of one head; row i is query i. Equals eager output.
    T² floats: past a few thousand tokens, views should ask for attention_map_pooled."""
    return probabilities(_store(capture), layer, head)


def attention_map_pooled(capture: Capture, layer: int, head: int, max_size: int = 256) -> tuple[torch.Tensor, int]:
    """(n, n) with n ≤ max_size, block-pooled (rows still sum to 1), and tokens per block."""
    return pooled(_store(capture), layer, head, max_size)


def capture_head_summaries(capture: Capture, derived: Derived | None = None) -> HeadSummaries:
    """Entropy, first-token attention and look-back per (layer, head, query) of a capture; computed
    once and kept in `derived` (beside the capture; a file saved with it carries them)."""
    if derived is not None and derived.summaries is not None:
        return derived.summaries
    result = summaries(_store(capture))
    if derived is not None:
        derived.summaries = result
    return result


__all__ = ["HeadSummaries", "PreparedLayer", "attention_map", "attention_map_pooled", "block_probs",
           "blockwise_summaries", "capture_head_summaries", "fused_summaries", "layer_probabilities", "pooled",
           "prepare", "probabilities", "summaries"]
