"""What the attention function leaves behind: post-RoPE Q and K per layer, and the masks.

Why Q/K and not probabilities: eager `output_attentions` materialises layers × heads × T² at once;
Q and K are linear in T, and explorer.analyse.attention recomputes any head's probabilities
from them exactly as eager does. This module is plain data; the maths is in analyse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerAttention:
    """What one layer's attention saw. Tensors live on CPU or on the compute device (see
    Offloader); `device` is where the layer ran, used again for recomputation."""
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

    def layer(self, layer: int) -> LayerAttention:
        """One layer's record, or a KeyError that names the layers there are."""
        if layer not in self.layers:
            raise KeyError(f"attention of layer {layer} was not captured (captured: {self.layer_indices})")
        return self.layers[layer]


__all__ = ["AttentionStore", "LayerAttention"]
