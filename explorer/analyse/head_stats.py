"""Per-head summaries (entropy, first-token "sink" mass, mean look-back distance) for every
query, without ever holding a T×T matrix.

Why an online softmax: at 128k tokens one head's map is 64 GiB in float32. Each block of query
rows walks the keys it may see in tiles, keeping per row a running maximum m and, relative to it,
  s = Σ e^(x−m),   u = Σ e^(x−m)·(x−m),   w = Σ e^(x−m)·j,   e₀ = e^(x₀−m)
(rescaled by e^(m_old−m_new) when m grows; u also gains (m_old−m_new)·s). Then
  entropy = log s − u/s,   sink = e₀/s,   look-back = i − w/s.
Plain causal layers on a GPU (or CPU) can instead go through one fused attention kernel per layer
(`fused_summaries`), which is faster where flash kernels exist; both agree to ~1e-5 in float32.
"""
from __future__ import annotations

import torch

from explorer.analyse.attention_rows import MASKED, PreparedLayer, RowSource, fetch
from explorer.analyse.derived import HeadSummaries
from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.attention_store import AttentionStore

Device = str | torch.device | None
KEY_TILE = 4096


def online_summaries(prep: RowSource, block_elements: int = BLOCK_ELEMENTS, key_tile: int = KEY_TILE) -> torch.Tensor:
    """(3, h, Tq) float32: entropy, first-token share, look-back, in one pass over tiles of
    (query rows × keys), each tile at most `block_elements` scores."""
    if not isinstance(prep, PreparedLayer):
        return blockwise_summaries(prep, block_elements)
    h, t_q, t_k, dev = len(prep.heads), prep.t_q, prep.t_k, prep.device
    key_tile = max(1, min(key_tile, t_k, block_elements // max(1, h)))
    rows = max(1, block_elements // (h * key_tile))
    offset = t_k - t_q
    out = torch.empty(3, h, t_q, device=dev)
    for r0 in range(0, t_q, rows):
        r1 = min(t_q, r0 + rows)
        lo, hi = prep.key_span(r0, r1)
        m = torch.full((h, r1 - r0), MASKED, device=dev)                            # running max
        s, u, w, e0 = (torch.zeros(h, r1 - r0, device=dev) for _ in range(4))
        for k0 in range(lo, hi, key_tile):
            k1 = min(hi, k0 + key_tile)
            x = prep.scores(r0, r1, k0, k1)                                         # (h, b, n)
            m_new = torch.maximum(m, x.amax(-1))
            scale = torch.exp(m - m_new)                                            # (h, b)
            x = x - m_new[..., None]
            e = torch.exp(x)
            # Where the old maximum was a masked key's score (scale 0), its terms vanish: no 0·∞.
            u = torch.where(scale > 0, scale * (u + (m - m_new) * s), 0.0) + (e * x).sum(-1)
            s = scale * s + e.sum(-1)
            w = scale * w + torch.matmul(e, torch.arange(k0, k1, device=dev, dtype=torch.float32))
            e0 = scale * e0 + (e[..., 0] if k0 == 0 else 0)
            m = m_new
        out[0, :, r0:r1] = (torch.log(s) - u / s).clamp_min(0)
        out[1, :, r0:r1] = e0 / s
        out[2, :, r0:r1] = torch.arange(r0, r1, device=dev, dtype=torch.float32) + offset - w / s
    return out


def blockwise_summaries(prep: RowSource, block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """(3, h, Tq) from explicit probability blocks of query rows: the exact reference (and the
    path for stored maps)."""
    dev = prep.device
    h, t_q, t_k = len(prep.heads), prep.t_q, prep.t_k
    offset = t_k - t_q
    rows = max(1, block_elements // (h * t_k))
    out = torch.zeros(3, h, t_q, device=dev)
    for r0 in range(0, t_q, rows):
        r1 = min(t_q, r0 + rows)
        p, n = prep.block(r0, r1)                                                  # (h, b, n)
        out[0, :, r0:r1] = -torch.special.xlogy(p, p).sum(-1)
        out[1, :, r0:r1] = p[..., 0]
        dist = (torch.arange(r0, r1, device=dev)[:, None] + offset
                - torch.arange(n, device=dev)[None, :]).to(torch.float32)          # (b, n)
        out[2, :, r0:r1] = (p * dist).sum(-1)
    return out


_FUSED_BROKEN: set[str] = set()     # device types where the fused kernels raised once
_CUDNN_OK: dict[str, bool] = {}     # device -> cuDNN attention with a wider value gives the reference's numbers


def _summary_dtype(prep: PreparedLayer) -> torch.dtype:
    """float32 for float32 models and on CPU (exact); on CUDA, 16-bit models get float16 tensor
    cores (10-bit mantissa, better than bfloat16) unless their queries or keys exceed its range."""
    if prep.device.type != "cuda" or prep.q.dtype == torch.float32:
        return torch.float32
    peak = max(float(prep.q.abs().amax()), float(prep.k.abs().amax()))
    return torch.float16 if peak < 3.0e4 else torch.float32


def _lse_rows(lse: torch.Tensor, t: int) -> torch.Tensor:
    """(H, T) float32 from a kernel's logsumexp: flash gives (1, H, T), memory-efficient pads T to a
    multiple of 32, cuDNN gives (1, H, T, 1)."""
    return lse.reshape(lse.shape[0], lse.shape[1], -1)[0, :, :t].to(torch.float32)


def _cudnn_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float):
    return torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False,
                                                              scale=scale)[:2]


def _cudnn_agrees(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether cuDNN attention with a value wider than the key (D vs D+8) returns what the
    memory-efficient kernel returns, output and logsumexp, on a small causal problem. Checked once
    per device: the fast path is taken only where it is shown to compute the same thing."""
    key = f"{device}:{dtype}"
    if key not in _CUDNN_OK:
        ok = False
        try:
            g = torch.Generator(device=device).manual_seed(0)
            q, k = (torch.randn(1, 4, 256, 128, device=device, generator=g).to(dtype) for _ in range(2))
            v = torch.randn(1, 4, 256, 136, device=device, generator=g).to(dtype)
            out, lse = _cudnn_call(q, k, v, True, 0.09)
            ref, ref_lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True,
                                                                                  scale=0.09)[:2]
            ok = (torch.allclose(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
                  and torch.allclose(_lse_rows(lse, 256), _lse_rows(ref_lse, 256), atol=2e-2, rtol=1e-3))
        except (RuntimeError, AttributeError, NotImplementedError, TypeError):
            ok = False
        _CUDNN_OK[key] = ok
    return _CUDNN_OK[key]


def _fused_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, logsumexp) of attention whose value is wider than query and key (D+8 vs D).

    Which kernel: measured on an H200 at 32k tokens (bench/results/summary_kernels_cuda.md), cuDNN
    takes a wider value at 470 TFLOP/s, while flash needs all three padded to D+8 (136), which it
    runs as a larger compiled head size at 190, and the memory-efficient kernel runs at 90. So:
    cuDNN where it agrees with the reference, else flash on padded query/key, else memory-efficient.
    The CPU's flash kernel also needs equal sizes, so the CPU pads too."""
    extra = v.shape[-1] - q.shape[-1]

    def padded(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.new_zeros(*x.shape[:-1], extra)], dim=-1)        # zeros add nothing to q·k

    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(padded(q), padded(k), v, 0.0, causal,
                                                                          scale=scale)[:2]
    if q.dtype != torch.float32 and _cudnn_agrees(q.device, q.dtype):
        try:
            return _cudnn_call(q, k, v, causal, scale)
        except (RuntimeError, NotImplementedError):
            pass
    if q.dtype != torch.float32:
        try:
            return torch.ops.aten._scaled_dot_product_flash_attention(padded(q), padded(k), v, 0.0, causal, False,
                                                                      scale=scale)[:2]
        except (RuntimeError, NotImplementedError):
            pass
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=scale)[:2]


def fused_summaries(prep: PreparedLayer, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """Summaries of all heads of a plainly causal (or full) layer from one fused attention call.

    With s = scale·q·k and p = softmax(s): entropy = logsumexp(s) − Σ p·s, and Σ p·s =
    scale·q·(Σ p·k). So attention with the keys themselves as values, plus the key position
    (divided by T) appended as an extra value column, returns Σ p·k and Σ p·j; the kernel also
    returns logsumexp; p₀ = exp(s₀ − logsumexp). Nothing of size T² is written. Returns None where
    the kernels are unavailable.
    """
    dev = prep.device
    if dev.type in _FUSED_BROKEN or dev.type not in ("cuda", "cpu"):
        return None
    dtype = dtype or _summary_dtype(prep)
    rec = prep.rec
    q = prep.q.to(torch.float32)                                                   # (H, T, D)
    h, t, d = q.shape
    k = prep.k.repeat_interleave(prep.groups, dim=0) if prep.groups > 1 else prep.k   # (H, T, D) fp32
    extra = 8                                                                      # keeps D+extra a multiple of 8
    pos = torch.arange(t, device=dev, dtype=torch.float32)
    v = torch.cat([k, (pos / t).view(1, t, 1).expand(h, t, 1), k.new_zeros(h, t, extra - 1)],
                  dim=-1)[None].to(dtype)                                          # (1, H, T, D+8)
    try:
        out, lse = _fused_call(q[None].to(dtype), k[None].to(dtype), v, rec.causal, rec.scaling)
    except (RuntimeError, AttributeError, NotImplementedError):
        _FUSED_BROKEN.add(dev.type)
        return None
    out = out[0].to(torch.float32)                                                 # (H, T, D+8)
    lse = _lse_rows(lse, t)                                                        # (H, T)
    expected_ps = rec.scaling * (q * out[..., :d]).sum(-1)                         # Σ p·s
    entropy = (lse - expected_ps).clamp_min(0)
    s0 = rec.scaling * (q * k[:, :1]).sum(-1)                                      # (H, T) score on key 0
    first = torch.exp(s0 - lse).clamp_max(1)
    lookback = (pos[None] - out[..., d] * t).clamp_min(0)
    return torch.stack([entropy, first, lookback])


def layer_summaries(prep: RowSource, block_elements: int = BLOCK_ELEMENTS, fused: bool | None = None) -> torch.Tensor:
    """(3, H, T) for one prepared layer. fused=None: the fused kernel on CUDA where the layer
    allows it, the online softmax otherwise (and on CPU, where it is exact in float32)."""
    use_fused = (prep.device.type == "cuda") if fused is None else fused
    if use_fused and prep.fusable():
        stats = fused_summaries(prep)
        if stats is not None:
            return stats
    return online_summaries(prep, block_elements)


def summaries(store: AttentionStore, layers: list[int] | None = None, batch: int = 0, device: Device = None,
              block_elements: int = BLOCK_ELEMENTS, fused: bool | None = None) -> HeadSummaries:
    """Entropy, attention on the first token and mean look-back distance per (layer, head,
    query), on each layer's own device (where its Q/K are). On CUDA the next layer's Q/K are
    copied in while the current one is computed (when they are on the host)."""
    layers = store.layer_indices if layers is None else list(layers)
    results: list[torch.Tensor] = []                                         # each (3, H, T)
    upcoming = fetch(store, layers[0], batch, device) if layers else None
    for li in range(len(layers)):
        prep = upcoming
        upcoming = fetch(store, layers[li + 1], batch, device) if li + 1 < len(layers) else None
        prep.ready()
        results.append(layer_summaries(prep, block_elements, fused))
    if not results:
        empty = torch.zeros(0, store.num_heads, 0)
        return HeadSummaries(layers=[], entropy=empty, first_token=empty, lookback=empty)
    all_stats = torch.stack([r.cpu() for r in results], dim=1)               # (3, L, H, T)
    return HeadSummaries(layers=layers, entropy=all_stats[0], first_token=all_stats[1], lookback=all_stats[2])


def summary_flops(num_heads: int, head_dim: int, t_q: int, t_k: int, layers: int, causal: bool = True) -> float:
    """Useful floating-point operations of the summaries: the scores QKᵀ of every allowed (query,
    key) pair, 2·D each (what the benchmark divides by time for FLOP/s)."""
    pairs = t_q * t_k - (t_q * (t_q - 1) // 2 if causal and t_q == t_k else 0)
    return 2.0 * head_dim * pairs * num_heads * layers


__all__ = ["blockwise_summaries", "fused_summaries", "layer_summaries", "online_summaries", "summaries",
           "summary_flops"]
