"""One layer's attention, ready on the compute device: scores and probabilities for any block
of query rows × key columns, recomputed from recorded Q/K (or read from stored maps).

Why one source of rows: maps, pooled maps, windows, summaries, drift and routes all need
"probabilities of these rows on those keys"; computing them in one place keeps the mask,
softcap and GQA rules identical everywhere (the mask rule itself is explorer/record/mask_rule.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.record import mask_rule
from explorer.record.attention_store import AttentionStore, LayerAttention

Device = str | torch.device | None
MASKED = torch.finfo(torch.float32).min       # score of a masked key (as eager fills it)


@dataclass
class RowSource:
    """What every row source shares: its heads, sizes and device. Subclasses give `block`."""
    rec: LayerAttention
    heads: list[int]
    t_q: int
    t_k: int
    device: torch.device

    def fusable(self) -> bool:
        return False

    def ready(self) -> None:
        """Wait for a prefetch (PreparedLayer on CUDA); nothing to wait for otherwise."""

    def block(self, row0: int, row1: int, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
        """(probabilities (h, rows, n) float32, n): keys at n and beyond are masked for every row."""
        raise NotImplementedError


@dataclass
class PreparedLayer(RowSource):
    """One layer's Q/K on the compute device, ready for blocks of query rows and key columns."""
    q: torch.Tensor = None          # (h, Tq, D) model dtype
    k: torch.Tensor = None          # (kv', Tk, D) float32
    kv_local: torch.Tensor | None = None   # (h,) index into k per head; None: all heads, grouped
    mask: torch.Tensor | None = None       # (1|h, Tq, Tk) bool
    groups: int = 1                 # query heads per KV head when kv_local is None
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
        window_ok = rec.sliding_window is None or self.t_k <= rec.sliding_window
        return (self.mask is None and rec.softcap is None and window_ok and self.t_q == self.t_k
                and self.kv_local is None)

    def key_span(self, row0: int, row1: int) -> tuple[int, int]:
        """[lo, hi): the keys any row of [row0, row1) may see under the causal/window rule (all
        keys where a mask tensor decides)."""
        if self.mask is not None:
            return 0, self.t_k
        return mask_rule.visible_span(row0, row1, self.t_k, self.t_k - self.t_q, self.rec.causal,
                                      self.rec.sliding_window)

    def scores(self, row0: int, row1: int, key0: int, key1: int) -> torch.Tensor:
        """(h, rows, key1 − key0) float32 scores as eager computes them (scaled, softcapped),
        with masked keys at MASKED."""
        rec = self.rec
        q = self.q[:, row0:row1].to(torch.float32) * rec.scaling                      # (h, b, D), scaled: one
        k = self.k[:, key0:key1]                                                      # pass fewer over scores
        if self.kv_local is None:
            kv, b = k.shape[0], row1 - row0
            s = torch.matmul(q.reshape(kv, self.groups * b, -1), k.transpose(-1, -2))
            s = s.view(kv * self.groups, b, key1 - key0)                             # (H, b, n)
        else:
            s = torch.matmul(q, k.index_select(0, self.kv_local).transpose(-1, -2))  # (h, b, n)
        if rec.softcap is not None:
            s.div_(rec.softcap).tanh_().mul_(rec.softcap)
        if self.mask is not None:
            return s.masked_fill_(~self.mask[:, row0:row1, key0:key1], MASKED)
        offset = self.t_k - self.t_q
        # Causal only: keys before the block's first query are visible to every row, so only the
        # columns from there on are masked (the diagonal part of a long block).
        c0 = max(key0, row0 + offset + 1) if rec.causal and not rec.sliding_window else key0
        if c0 < key1:
            allowed = mask_rule.allowed_keys(torch.arange(row0, row1, device=self.device) + offset,
                                             torch.arange(c0, key1, device=self.device), rec.causal,
                                             rec.sliding_window)
            if allowed is not None:
                s[..., c0 - key0:].masked_fill_(~allowed, MASKED)
        return s

    def block(self, row0: int, row1: int, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
        n = self.t_k
        if trim_keys:
            if self.mask is not None:
                allowed = self.mask[:, row0:row1].any(dim=0).any(dim=0).nonzero()
                n = int(allowed.max()) + 1 if allowed.numel() else self.t_k
            elif self.rec.causal:
                n = min(self.t_k, row1 + self.t_k - self.t_q)
        return torch.softmax(self.scores(row0, row1, 0, n), dim=-1), n


@dataclass
class StoredRows(RowSource):
    """Rows read from stored probabilities (the eager fallback, explorer/record/eager_fallback.py):
    there are no queries or keys to recompute from."""
    maps: torch.Tensor = None       # (h, Tq, Tk) float32

    def block(self, row0: int, row1: int, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
        return self.maps[:, row0:row1].to(self.device), self.t_k


def compute_device(rec: LayerAttention, device: Device) -> torch.device:
    """Where a layer is recomputed: asked for, else where its queries are, else where it ran."""
    if device is not None:
        return torch.device(device)
    dev = rec.q.device if rec.q is not None and rec.q.device.type == "cuda" else torch.device(rec.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return dev


def layer_rows(store: AttentionStore, layer: int, heads: list[int] | None = None, batch: int = 0,
            device: Device = None) -> RowSource:
    """Move one layer's Q/K (and mask) for `heads` to the compute device once; blocks of query
    rows are then computed there without further transfers. Raises LayerNotKept for a layer
    whose Q/K were not kept."""
    rec = store.layer(layer)
    maps = getattr(store, "maps", None)
    chosen = list(range(store.num_heads)) if heads is None else list(heads)
    if maps is not None:                                    # eager fallback: probabilities are stored
        m = maps[layer][chosen]                                                     # (h, Tq, Tk)
        return StoredRows(rec, chosen, m.shape[1], m.shape[2], m.device, maps=m)
    dev = compute_device(rec, device)
    all_heads = chosen == list(range(store.num_heads))
    if all_heads:
        q, k, kv_local = rec.q[batch], rec.k[batch], None                          # (H, Tq, D), (KV, Tk, D)
    else:
        kvs = sorted({store.kv_head_of(h) for h in chosen})
        q, k = rec.q[batch, chosen], rec.k[batch, kvs]
        kv_local = torch.tensor([kvs.index(store.kv_head_of(h)) for h in chosen], device=dev)
    q = q.to(dev, non_blocking=True)
    k = k.to(dev, non_blocking=True).to(torch.float32)
    mask = None
    if rec.mask is not None:
        m = store.masks[rec.mask]
        m = m[batch if m.shape[0] > 1 else 0]                                       # (1|H, Tq, Tk)
        mask = (m[chosen] if m.shape[0] > 1 else m).to(dev, non_blocking=True)
    return PreparedLayer(rec, chosen, q.shape[1], k.shape[1], dev, q=q, k=k, kv_local=kv_local, mask=mask,
                         groups=store.num_heads // store.num_kv_heads if all_heads else 1)


_COPY_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def fetch(store: AttentionStore, layer: int, batch: int = 0, device: Device = None) -> RowSource:
    """layer_rows() on a side stream when the layer computes on CUDA, so copies overlap compute."""
    dev = compute_device(store.layer(layer), device)
    if dev.type != "cuda":
        return layer_rows(store, layer, None, batch, dev)
    stream = _COPY_STREAMS.get(dev)
    if stream is None:
        stream = _COPY_STREAMS[dev] = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        prep = layer_rows(store, layer, None, batch, dev)
        prep.event = stream.record_event()
    return prep


def block_probs(store: AttentionStore, layer: int, heads: list[int], row0: int, row1: int, batch: int = 0,
                device: Device = None, trim_keys: bool = True) -> tuple[torch.Tensor, int]:
    """Probabilities of query rows [row0, row1) for `heads`, float32: (len(heads), rows, n_keys).
    Keys at n_keys and beyond are masked for every row of the block (causal trimming)."""
    return layer_rows(store, layer, heads, batch, device).block(row0, row1, trim_keys)


__all__ = ["MASKED", "PreparedLayer", "RowSource", "StoredRows", "block_probs", "compute_device", "fetch", "layer_rows"]
