"""Attention probabilities without eager attention.

Why: eager `output_attentions` materialises layers × heads × T² at once, which costs time and
runs out of memory on long prompts. Instead the model runs with a registered attention
function ("explorer") that calls SDPA for the output and, while a capture is active in the
current thread, keeps the post-RoPE queries (B, H, T, D) and un-repeated keys (B, KV, T, D) of
each layer. Probabilities for one (layer, head) are recomputed on demand exactly as eager does
(softmax(QKᵀ·scale, softcapped, + mask)), and per-head summaries are computed blockwise over
query rows, so the full tensor never exists.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Looked up through the registries rather than imported by name: names move between versions
# (the GPU machine runs an older transformers than this one).
sdpa_attention_forward = ALL_ATTENTION_FUNCTIONS["sdpa"]
sdpa_mask = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, KV, T, D) -> (B, KV·groups, T, D), each KV head repeated for its query heads."""
    if groups == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None].expand(b, kv, groups, t, d).reshape(b, kv * groups, t, d)

IMPLEMENTATION = "explorer"

# Elements of one (heads × rows × keys) float32 block when recomputing probabilities: ~64 MiB.
DEFAULT_BLOCK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------
# Recording: what the attention function sees, routed to the capture active in this thread.
# --------------------------------------------------------------------------------------------

@dataclass
class LayerAttention:
    """What one layer's attention saw. Tensors live on `store.device`-independent storage (CPU
    or the compute device); `device` is where the layer ran, used again for recomputation."""
    q: torch.Tensor               # (B, H, Tq, D) post-RoPE queries
    k: torch.Tensor               # (B, KV, Tk, D) post-RoPE keys, not repeated for GQA
    mask: int | None              # index into AttentionStore.masks; None: no mask tensor was used
    causal: bool                  # with mask None: causal (True) or full (False)
    scaling: float
    softcap: float | None
    sliding_window: int | None    # only applied when mask is None (the mask already encodes it)
    device: str                   # where the layer computed, e.g. "cuda:0" or "cpu"


@dataclass
class AttentionStore:
    """Compact attention record for a batch: Q and K per layer plus the distinct masks.

    Memory is linear in T (per layer (H + KV) · T · D values), against H · T² for the
    probabilities themselves.
    """
    num_heads: int
    num_kv_heads: int
    layers: dict[int, LayerAttention] = field(default_factory=dict)
    masks: list[torch.Tensor] = field(default_factory=list)   # each (B, 1|H, Tq, Tk) bool
    block_elements: int = DEFAULT_BLOCK_ELEMENTS

    # ---- structure ------------------------------------------------------------------------
    @property
    def layer_indices(self) -> list[int]:
        return sorted(self.layers)

    @property
    def num_tokens(self) -> int:
        first = self.layers[self.layer_indices[0]]
        return first.q.shape[2]

    def kv_head_of(self, head: int) -> int:
        """The KV head that query head `head` reads (GQA groups are contiguous, as in repeat_kv)."""
        return head // (self.num_heads // self.num_kv_heads)

    def kv_groups(self) -> list[list[int]]:
        """For each KV head, the query heads sharing it."""
        return [[h for h in range(self.num_heads) if self.kv_head_of(h) == g] for g in range(self.num_kv_heads)]

    # ---- probabilities --------------------------------------------------------------------
    def _layer(self, layer: int) -> LayerAttention:
        if layer not in self.layers:
            raise KeyError(f"attention of layer {layer} was not captured (captured: {self.layer_indices})")
        return self.layers[layer]

    def _compute_device(self, rec: LayerAttention, device: str | torch.device | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        dev = torch.device(rec.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return torch.device("cpu")
        return dev

    def prepare(self, layer: int, heads: list[int] | None = None, batch: int = 0,
                device: str | torch.device | None = None) -> "PreparedLayer":
        """Move one layer's Q/K (and mask) for `heads` to the compute device once; blocks of
        query rows are then computed there without further transfers."""
        rec = self._layer(layer)
        dev = self._compute_device(rec, device)
        all_heads = heads is None or list(heads) == list(range(self.num_heads))
        heads = list(range(self.num_heads)) if heads is None else list(heads)
        if all_heads:
            q = rec.q[batch]                                                        # (H, Tq, D)
            k = rec.k[batch]                                                        # (KV, Tk, D)
            kv_local = None
        else:
            kvs = sorted({self.kv_head_of(h) for h in heads})
            q = rec.q[batch, heads]
            k = rec.k[batch, kvs]
            kv_local = torch.tensor([kvs.index(self.kv_head_of(h)) for h in heads], device=dev)
        q = q.to(dev, non_blocking=True)
        k = k.to(dev, non_blocking=True).to(torch.float32)
        mask = None
        if rec.mask is not None:
            m = self.masks[rec.mask]
            m = m[batch if m.shape[0] > 1 else 0]                                   # (1|H, Tq, Tk)
            if m.shape[0] > 1:
                m = m[heads]
            mask = m.to(dev, non_blocking=True)
        return PreparedLayer(rec=rec, heads=heads, q=q, k=k, kv_local=kv_local, mask=mask, device=dev,
                             groups=self.num_heads // self.num_kv_heads if all_heads else 1)

    def block_probs(self, layer: int, heads: list[int], row0: int, row1: int, batch: int = 0,
                    device: str | torch.device | None = None, trim_keys: bool = True,
                    ) -> tuple[torch.Tensor, int]:
        """Probabilities of query rows [row0, row1) for `heads`, float32: (len(heads), rows, n_keys).
        Keys at n_keys and beyond are masked for every row of the block (causal trimming)."""
        return self.prepare(layer, heads, batch, device).block(row0, row1, trim_keys)

    def probabilities(self, layer: int, head: int, batch: int = 0,
                      device: str | torch.device | None = None) -> torch.Tensor:
        """The full (Tq, Tk) map of one head, float32 on CPU. Equals eager output_attentions."""
        prep = self.prepare(layer, [head], batch, device)
        t_q, t_k = prep.q.shape[1], prep.k.shape[1]
        probs, n = prep.block(0, t_q)
        full = probs[0] if n == t_k else nn.functional.pad(probs[0], (0, t_k - n))
        return _to_host(full)

    def layer_probabilities(self, layer: int, batch: int = 0) -> torch.Tensor:
        """All heads of one layer, (H, Tq, Tk) float32 on CPU; for tests and small prompts."""
        prep = self.prepare(layer, None, batch)
        t_q, t_k = prep.q.shape[1], prep.k.shape[1]
        probs, n = prep.block(0, t_q)
        out = torch.zeros(self.num_heads, t_q, t_k, dtype=torch.float32)
        out[..., :n] = probs.cpu()
        return out

    def pooled(self, layer: int, head: int, max_size: int = 256, batch: int = 0,
               device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
        """A block-pooled map of at most max_size × max_size, for long prompts.

        Cell (i, j) is the mean over the queries of block i of the total probability on the keys
        of block j, so each pooled row still sums to 1. Returns (map (n, n) float32 on CPU, factor)
        where factor is the number of tokens per block; the last block may be partial.
        """
        rec = self._layer(layer)
        t_q, t_k = rec.q.shape[2], rec.k.shape[2]
        factor = max(1, math.ceil(max(t_q, t_k) / max_size))
        if factor == 1:
            return self.probabilities(layer, head, batch, device), 1
        prep = self.prepare(layer, [head], batch, device)
        dev = prep.device
        n_q, n_k = math.ceil(t_q / factor), math.ceil(t_k / factor)
        rows_per_block = max(factor, (self.block_elements // max(t_k, 1)) // factor * factor)
        out = torch.zeros(n_q, n_k, dtype=torch.float32, device=dev)
        for r0 in range(0, t_q, rows_per_block):
            r1 = min(t_q, r0 + rows_per_block)
            probs, n = prep.block(r0, r1)
            p = nn.functional.pad(probs[0], (0, n_k * factor - n))                 # (b, n_k·factor)
            p = p.view(r1 - r0, n_k, factor).sum(-1)                                # (b, n_k)
            rows = torch.arange(r0, r1, device=dev) // factor
            out.index_add_(0, rows, p)
        counts = torch.full((n_q,), float(factor), device=dev)
        counts[-1] = t_q - factor * (n_q - 1)
        return (out / counts[:, None]).cpu(), factor

    # ---- summaries ------------------------------------------------------------------------
    def summaries(self, layers: list[int] | None = None, batch: int = 0,
                  device: str | torch.device | None = None) -> "HeadSummaries":
        """Entropy, attention on the first token and mean look-back distance per (layer, head,
        query), on each layer's own device.

        Plain causal layers go through one fused attention kernel per layer (see
        `_fused_summaries`); masked or softcapped layers are computed block by block over query
        rows. On CUDA the next layer's Q/K are copied in while the current one is computed.
        """
        layers = self.layer_indices if layers is None else list(layers)
        results: list[torch.Tensor] = []                                     # each (3, H, T)
        upcoming = self._fetch(layers[0], batch, device) if layers else None
        for li, layer in enumerate(layers):
            prep = upcoming
            upcoming = self._fetch(layers[li + 1], batch, device) if li + 1 < len(layers) else None
            prep.ready()
            stats = _fused_summaries(prep) if prep.fusable() else None
            if stats is None:
                stats = self._blockwise_summaries(prep)
            results.append(stats)
        stacked = [r.cpu() for r in results]
        if not stacked:
            empty = torch.zeros(0, self.num_heads, 0)
            return HeadSummaries(layers=[], entropy=empty, first_token=empty, lookback=empty)
        all_stats = torch.stack(stacked, dim=1)                              # (3, L, H, T)
        return HeadSummaries(layers=layers, entropy=all_stats[0], first_token=all_stats[1],
                             lookback=all_stats[2])

    def _fetch(self, layer: int, batch: int, device: str | torch.device | None) -> "PreparedLayer":
        """prepare() on a side stream when the layer computes on CUDA, so copies overlap compute."""
        rec = self._layer(layer)
        dev = self._compute_device(rec, device)
        if dev.type != "cuda":
            return self.prepare(layer, None, batch, dev)
        stream = _copy_stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            prep = self.prepare(layer, None, batch, dev)
            prep.event = stream.record_event()
        return prep

    def _blockwise_summaries(self, prep: "PreparedLayer") -> torch.Tensor:
        dev = prep.device
        t_q, t_k = prep.q.shape[1], prep.k.shape[1]
        offset = t_k - t_q
        rows = max(1, self.block_elements // (self.num_heads * t_k))
        out = torch.zeros(3, self.num_heads, t_q, device=dev)
        for r0 in range(0, t_q, rows):
            r1 = min(t_q, r0 + rows)
            p, n = prep.block(r0, r1)                                              # (H, b, n)
            out[0, :, r0:r1] = -torch.special.xlogy(p, p).sum(-1)
            out[1, :, r0:r1] = p[..., 0]
            dist = (torch.arange(r0, r1, device=dev)[:, None] + offset
                    - torch.arange(n, device=dev)[None, :]).to(torch.float32)      # (b, n)
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


def _summary_dtype(prep: "PreparedLayer") -> torch.dtype:
    """float32 for float32 models and on CPU (exact); on CUDA, 16-bit models get float16 tensor
    cores (10-bit mantissa, better than bfloat16) unless their queries or keys exceed its range."""
    if prep.device.type != "cuda" or prep.q.dtype == torch.float32:
        return torch.float32
    peak = max(float(prep.q.abs().amax()), float(prep.k.abs().amax()))
    return torch.float16 if peak < 3.0e4 else torch.float32


def _fused_summaries(prep: "PreparedLayer", dtype: torch.dtype | None = None) -> torch.Tensor | None:
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


@dataclass
class HeadSummaries:
    """Per-head attention statistics; every tensor is (layers, heads, T) float32, one value per query.

    Why per query and not just per head: the views plot how a head's behaviour changes along the
    prompt; head-level means are one `.mean(-1)` away (see `per_head`).
    """
    layers: list[int]             # layer index of each first-axis row
    entropy: torch.Tensor         # (L, H, T) nats; 0 = all mass on one key
    first_token: torch.Tensor     # (L, H, T) probability on position 0 (attention sink)
    lookback: torch.Tensor        # (L, H, T) expected distance i - j to the attended keys

    def per_head(self) -> dict[str, torch.Tensor]:
        """Means over query positions, each (L, H). Position 0 is left out when there are others:
        its only possible key is itself, so it says nothing about the head."""
        sl = slice(1, None) if self.entropy.shape[-1] > 1 else slice(None)
        return {"entropy": self.entropy[..., sl].mean(-1), "first_token": self.first_token[..., sl].mean(-1),
                "lookback": self.lookback[..., sl].mean(-1)}


# --------------------------------------------------------------------------------------------
# The registered attention function and the per-thread routing.
# --------------------------------------------------------------------------------------------

class Recorder:
    """Receives one forward's Q/K for one capture. Offloads to CPU asynchronously on CUDA.

    `layer_of` maps attention modules to layer indices (found by anatomy, not by a name table);
    `keep` limits which layers are stored (memory budget or user selection).
    """

    def __init__(self, store: AttentionStore, layer_of: dict[int, int], keep: set[int] | None,
                 offload: Callable[[torch.Tensor], torch.Tensor]):
        self.store = store
        self.layer_of = layer_of
        self.keep = keep
        self.offload = offload
        self._mask_ids: dict[int, int] = {}
        self._keepalive: list[torch.Tensor] = []   # masks whose id() we rely on during the forward
        self._order = 0

    def record(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, softcap: float | None,
               sliding_window: int | None, is_causal: bool | None) -> None:
        layer = self.layer_of.get(id(module))
        if layer is None:
            layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer = self._order
        self._order += 1
        if self.keep is not None and layer not in self.keep:
            return
        mask_index = None
        if attention_mask is not None:
            mask_index = self._mask_ids.get(id(attention_mask))
            if mask_index is None:
                m = attention_mask
                if m.dtype != torch.bool:   # additive float mask: allowed where not at the dtype minimum
                    m = m > torch.finfo(m.dtype).min / 2
                self._keepalive.append(attention_mask)
                self.store.masks.append(self.offload(m))
                mask_index = len(self.store.masks) - 1
                self._mask_ids[id(attention_mask)] = mask_index
        causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", True))
        self.store.layers[layer] = LayerAttention(
            q=self.offload(query.detach()), k=self.offload(key.detach()), mask=mask_index,
            causal=causal,
            scaling=float(scaling if scaling is not None else query.shape[-1] ** -0.5),
            softcap=float(softcap) if softcap else None,
            sliding_window=int(sliding_window) if sliding_window else None,
            device=str(query.device),
        )


_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("explorer_recorder", default=None)


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Route this thread's attention calls to `recorder` for the duration of the block."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def blockwise_eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float, softcap: float | None,
                              sliding_window: int | None = None, is_causal: bool = True,
                              block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """Eager arithmetic (softcap included) over blocks of query rows: what SDPA cannot do, at a
    memory cost of one block instead of heads × T². Returns (B, T, H, D) like the interfaces."""
    groups = query.shape[1] // key.shape[1]
    k = repeat_kv(key, groups)
    v = repeat_kv(value, groups)
    b, h, t_q, _ = query.shape
    t_k = k.shape[2]
    rows = max(1, block_elements // max(1, b * h * t_k))
    out = torch.empty(b, h, t_q, v.shape[-1], dtype=query.dtype, device=query.device)
    min_value = torch.finfo(query.dtype).min
    for r0 in range(0, t_q, rows):
        r1 = min(t_q, r0 + rows)
        s = torch.matmul(query[:, :, r0:r1], k.transpose(2, 3)) * scaling
        if softcap is not None:
            s = torch.tanh(s / softcap) * softcap
        if attention_mask is not None:
            m = attention_mask[:, :, r0:r1, :t_k]
            s = s.masked_fill(~m, min_value) if m.dtype == torch.bool else s + m
        elif is_causal or sliding_window:
            qpos = torch.arange(r0, r1, device=s.device)[:, None] + (t_k - t_q)
            kpos = torch.arange(t_k, device=s.device)[None, :]
            allowed = (kpos <= qpos) if is_causal else torch.ones_like(kpos <= qpos)
            if sliding_window:
                allowed = allowed & (kpos > qpos - sliding_window)
            s = s.masked_fill(~allowed, min_value)
        p = torch.softmax(s, dim=-1, dtype=torch.float32).to(query.dtype)
        out[:, :, r0:r1] = torch.matmul(p, v)
    return out.transpose(1, 2).contiguous()


def explorer_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       softcap: float | None = None, sliding_window: int | None = None, **kwargs):
    """SDPA for the output (blockwise eager where SDPA cannot: softcapping); records Q/K when a
    capture is active in this thread. Threads without an active capture only pay one lookup."""
    recorder = _ACTIVE.get()
    is_causal = kwargs.get("is_causal")
    if recorder is not None:
        recorder.record(module, query, key, attention_mask, scaling, softcap, sliding_window, is_causal)
    kwargs.pop("output_attentions", None)
    if softcap is not None:
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", True))
        return blockwise_eager_attention(module, query, key, value, attention_mask, scaling, softcap,
                                         sliding_window, causal), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


AttentionInterface.register(IMPLEMENTATION, explorer_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


# --------------------------------------------------------------------------------------------
# Switching a shared model to the explorer implementation, reference-counted across threads.
# --------------------------------------------------------------------------------------------

_SWITCH_LOCK = threading.Lock()
_SWITCH_STATE: dict[int, tuple[int, object]] = {}   # id(model) -> (active captures, previous impl)


def _current_impl(model: nn.Module) -> object:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def supports_attention_interface(model: nn.Module) -> bool:
    """Models that dispatch through transformers' AttentionInterface can be switched at run time."""
    check = getattr(model, "_can_set_attn_implementation", None)
    try:
        if callable(check):
            return bool(check())
    except Exception:   # noqa: BLE001 - any failure means "cannot"
        return False
    return callable(getattr(model, "set_attn_implementation", None))


@contextlib.contextmanager
def explorer_attention_enabled(model: nn.Module) -> Iterator[bool]:
    """Switch `model` to the recording implementation; the last capture to leave switches back.

    Reference counting lets two threads capture on one model: the first one in switches, and the
    switch back only happens when neither needs it. Yields False when the model cannot switch.
    """
    if not supports_attention_interface(model):
        yield False
        return
    key = id(model)
    with _SWITCH_LOCK:
        count, previous = _SWITCH_STATE.get(key, (0, None))
        if count == 0:
            previous = _current_impl(model)
            if previous != IMPLEMENTATION:
                model.set_attn_implementation(IMPLEMENTATION)
        _SWITCH_STATE[key] = (count + 1, previous)
    try:
        yield True
    finally:
        with _SWITCH_LOCK:
            count, previous = _SWITCH_STATE[key]
            if count == 1:
                del _SWITCH_STATE[key]
                if previous is not None and previous != IMPLEMENTATION:
                    model.set_attn_implementation(previous)
            else:
                _SWITCH_STATE[key] = (count - 1, previous)


class Offloader:
    """Moves recorded tensors off the compute device without stalling the forward.

    On CUDA, copies run on a side stream into pinned host memory (call finish() before reading).
    On CPU nothing moves: a tensor that owns all of its storage is kept as is (RoPE outputs are
    fresh tensors), and only views into something larger (a fused qkv output) are copied.
    """

    def __init__(self, to_cpu: bool = True):
        self.to_cpu = to_cpu
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        return stream

    @staticmethod
    def owns_storage(t: torch.Tensor) -> bool:
        return t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.device.type == "cpu":
            return t if self.owns_storage(t) else t.clone(memory_format=torch.contiguous_format)
        if not self.to_cpu:
            return t.clone()
        if t.device.type != "cuda":
            return t.to("cpu")
        stream = self._stream(t.device)
        # Explicitly pinned (and in the source's memory layout) so the copy is truly asynchronous.
        out = torch.empty_like(t, device="cpu", pin_memory=True)
        with torch.cuda.stream(stream):
            out.copy_(t, non_blocking=True)
        t.record_stream(stream)
        return out

    def new_buffer(self, shape: tuple[int, ...], dtype: torch.dtype, like: torch.device) -> torch.Tensor:
        """A host buffer that copy_into can fill asynchronously (pinned when the source is CUDA)."""
        if like.type == "cuda" and not self.to_cpu:
            return torch.empty(shape, dtype=dtype, device=like)
        return torch.empty(shape, dtype=dtype, pin_memory=like.type == "cuda")

    def copy_into(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        src = src.detach()
        if src.device.type != "cuda" or dst.device == src.device:
            dst.copy_(src)
            return
        stream = self._stream(src.device)
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)
        src.record_stream(stream)

    def finish(self) -> None:
        for stream in self._streams.values():
            stream.synchronize()


def record_attention(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     layers: set[int] | None = None, **forward_kwargs) -> tuple[AttentionStore, object]:
    """Run a (possibly padded) batch and return its AttentionStore and the model output.

    For batch work (comparisons, padding checks); capture() is the single-prompt front door.
    """
    from explorer.model.anatomy import find_anatomy, resolve   # local: anatomy does not need attention

    anatomy = find_anatomy(model)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = int(config.num_attention_heads)
    store = AttentionStore(num_heads=heads, num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads))
    layer_of = {id(resolve(model, lp.attention)): lp.index for lp in anatomy.layers if lp.attention}
    offload = Offloader()
    recorder = Recorder(store, layer_of, layers, offload)
    with torch.inference_mode(), explorer_attention_enabled(model) as switched, recording(recorder):
        if not switched:
            raise RuntimeError(f"{type(model).__name__} does not dispatch through transformers' attention interface")
        output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs)
        offload.finish()
    return store, output
