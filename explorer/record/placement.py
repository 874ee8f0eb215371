"""Where each layer's recorded queries and keys live: the GPU, host memory, or nowhere.

Why per layer: at 128k tokens an 8B model's Q/K take ~43 GiB, far more than half of a host's
free memory but well within an H200 once the forward's own peak is set aside. Layers go to the
GPU while they fit its budget (no copy at all: the forward runs at its own pace), then to host
memory (pinned, from the reused pool) while they fit that budget; the rest are dropped, and the
Capture says which and why (AttentionStore.placement).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import torch

from explorer.model.units import fmt_bytes
from explorer.record.attention_store import Placement
from explorer.record.buffer_pool import shared_pool

GPU_FRACTION = 0.9
"""Share of the GPU memory left free after the forward's peak that recorded Q/K may take."""


def forward_peak_bytes(config, t: int, act_bytes: int) -> int:
    """A generous estimate of one forward's activation peak without a KV cache (only the last
    position's logits): a few residual-sized tensors, the MLP's three intermediates, and Q/K/V."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    inter = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    heads = int(getattr(text, "num_attention_heads", 0) or 1)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or (hidden // heads if heads else 0))
    per_token = 4 * hidden + 3 * inter + (heads + 2 * kv) * head_dim
    return t * per_token * act_bytes


def gpu_budget(device: torch.device, peak: int, fraction: float = GPU_FRACTION) -> int:
    """Bytes of recorded Q/K the GPU may hold: `fraction` of what is free after the forward's peak."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)   # cached by torch, reusable
    return max(0, int((free - peak) * fraction))


def plan_layers(n_layers: int, wanted: Sequence[int] | None, bytes_per_layer: int,
                budget: int) -> tuple[list[int], str | None]:
    """Evenly spaced layers (first and last included) that fit the budget, and a note if reduced."""
    chosen = sorted(set(range(n_layers) if wanted is None else (i % n_layers for i in wanted)))
    fit = max(1, budget // max(1, bytes_per_layer))
    if len(chosen) <= fit:
        return chosen, None
    if fit == 1:
        kept = [chosen[-1]]
    else:
        kept = sorted({chosen[round(i * (len(chosen) - 1) / (fit - 1))] for i in range(fit)})
    note = (f"memory budget: residual stream kept for {len(kept)} of {len(chosen)} layers "
            f"({fmt_bytes(bytes_per_layer * len(chosen))} needed, budget {fmt_bytes(budget)})")
    return kept, note


def default_budget(device: torch.device, offload_to_cpu: bool) -> int:
    """Half of what is free where the recorded tensors will live; on the host, idle pooled
    buffers count as free (the next capture takes them back)."""
    if device.type == "cuda" and not offload_to_cpu:
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    idle = shared_pool().idle_bytes() if device.type == "cuda" else 0
    return int((psutil.virtual_memory().available + idle) * 0.5)


@dataclass(frozen=True)
class Budgets:
    """The two budgets a capture's Q/K are placed against, in bytes."""
    gpu: int
    host: int


def place_layers(layers: list[int], per_layer: int, budgets: Budgets) -> dict[int, Placement]:
    """GPU first (in layer order) while it fits, then host memory for evenly spaced layers of the
    rest while it fits; every other layer is dropped with a sentence saying why."""
    per_layer = max(1, per_layer)
    n_gpu = min(len(layers), budgets.gpu // per_layer)
    placement = {layer: Placement("gpu") for layer in layers[:n_gpu]}
    rest = layers[n_gpu:]
    fit = min(len(rest), max(0, budgets.host) // per_layer)
    if fit >= len(rest):
        host = set(rest)
    elif fit == 0:
        host = set()
    elif fit == 1:
        host = {rest[-1]}
    else:
        host = {rest[round(i * (len(rest) - 1) / (fit - 1))] for i in range(fit)}
    why = (f"over the memory budget (each layer's queries and keys take {fmt_bytes(per_layer)}; the GPU "
           f"budget {fmt_bytes(budgets.gpu)} held {n_gpu} layers, the host budget {fmt_bytes(budgets.host)} "
           f"{len(host)} more)")
    for layer in rest:
        placement[layer] = Placement("host") if layer in host else Placement("dropped", why)
    return dict(sorted(placement.items()))


__all__ = ["GPU_FRACTION", "Budgets", "default_budget", "forward_peak_bytes", "gpu_budget", "place_layers",
           "plan_layers"]
