"""What the attention function leaves behind: post-RoPE Q and K per layer, and the masks.

Why Q/K and not probabilities: eager `output_attentions` materialises layers × heads × T² at once;
Q and K are linear in T, and explorer.analyse.attention recomputes any head's probabilities
from them exactly as eager does. This module is plain data; the maths is in analyse.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from explorer.model.errors import ExplorerError

WHERE = ("gpu", "host", "dropped")


class AttentionMissing(ExplorerError, LookupError):
    """A capture holds no attention for what was asked (not requested, or not recorded)."""


class LayerNotKept(AttentionMissing):
    """A layer's queries and keys were not kept; the message says why (budget, selection)."""


@dataclass(frozen=True)
class Placement:
    """Where one layer's recorded Q/K live: "gpu", "host", or "dropped" with the reason."""
    where: str
    reason: str | None = None


def layer_ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0–2, 5, 7–8"."""
    out: list[str] = []
    for i in sorted(layers):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in out)


def placement_summary(placement: dict[int, Placement]) -> str:
    """One sentence for the page, the CLI and `show`: which layers are where, which were dropped
    and why."""
    if not placement:
        return "attention: not recorded"
    by: dict[str, list[int]] = {w: [] for w in WHERE}
    for layer, p in placement.items():
        by[p.where].append(layer)
    kept = len(by["gpu"]) + len(by["host"])
    parts = [f"attention kept for {kept} of {len(placement)} layers"]
    if by["gpu"]:
        parts.append(f"on the GPU: {layer_ranges(by['gpu'])}")
    if by["host"]:
        parts.append(f"in host memory: {layer_ranges(by['host'])}")
    text = "; ".join(parts)
    if by["dropped"]:
        reasons: dict[str, list[int]] = {}
        for layer in by["dropped"]:
            reasons.setdefault(placement[layer].reason or "not recorded", []).append(layer)
        text += "; dropped " + "; ".join(f"{layer_ranges(ls)} ({why})" for why, ls in reasons.items())
    return text


@dataclass
class LayerAttention:
    """What one layer's attention saw. Tensors live on CPU or on the compute device (see
    Offloader); `device` is where the layer ran, used again for recomputation. A layer whose
    probabilities were stored instead (the eager fallback's StoredAttention) has no Q/K: None."""
    q: torch.Tensor | None        # (B, H, Tq, D) post-RoPE queries
    k: torch.Tensor | None        # (B, KV, Tk, D) post-RoPE keys, not repeated for GQA
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
    placement: dict[int, Placement] = field(default_factory=dict)   # every layer asked for

    @property
    def layer_indices(self) -> list[int]:
        return sorted(self.layers)

    @property
    def num_tokens(self) -> int:
        return self.sizes(self.layer_indices[0])[0]

    def sizes(self, layer: int) -> tuple[int, int]:
        """(queries, keys) of a kept layer."""
        rec = self.layer(layer)
        return rec.q.shape[2], rec.k.shape[2]

    def on_gpu(self, layer: int) -> bool:
        """Whether a kept layer's record lives on a GPU."""
        return self.layers[layer].q.device.type == "cuda"

    def kv_head_of(self, head: int) -> int:
        """The KV head that query head `head` reads (GQA groups are contiguous, as in repeat_kv)."""
        return head // (self.num_heads // self.num_kv_heads)

    def kv_groups(self) -> list[list[int]]:
        """For each KV head, the query heads sharing it."""
        return [[h for h in range(self.num_heads) if self.kv_head_of(h) == g] for g in range(self.num_kv_heads)]

    def where(self, layer: int) -> Placement:
        """Where layer `layer`'s Q/K are; layers recorded without a placement are where their tensors are."""
        if layer in self.placement:
            return self.placement[layer]
        if layer in self.layers:
            return Placement("gpu" if self.on_gpu(layer) else "host")
        return Placement("dropped", "not among the layers this capture recorded")

    def layer(self, layer: int) -> LayerAttention:
        """One layer's record, or LayerNotKept saying why it is not there."""
        if layer not in self.layers:
            why = self.where(layer).reason or "not recorded"
            kept = layer_ranges(self.layer_indices) or "none"
            raise LayerNotKept(f"The attention of layer {layer} was not kept: {why} (layers kept: {kept}).")
        return self.layers[layer]

    def placement_summary(self) -> str:
        return placement_summary({**{i: self.where(i) for i in self.layers}, **self.placement})

    def placement_meta(self) -> dict[str, list]:
        """{layer: [where, reason]} for a capture file's metadata."""
        return {str(i): [p.where, p.reason] for i, p in sorted(self.placement.items())}

    def restore_placement(self, meta: dict | None) -> None:
        """From a file: kept layers are on the host now; dropped ones keep their reason."""
        for key, value in (meta or {}).items() if isinstance(meta, dict) else ():
            if not (str(key).isdigit() and isinstance(value, list) and len(value) == 2):
                continue                                   # an odd entry only loses its sentence
            layer, reason = int(key), value[1] if isinstance(value[1], str) else None
            self.placement[layer] = Placement("host") if layer in self.layers else Placement("dropped", reason)


__all__ = ["AttentionMissing", "AttentionStore", "LayerAttention", "LayerNotKept", "Placement", "layer_ranges",
           "placement_summary"]
