"""Attention for models that do not dispatch through transformers' attention interface.

Why a fallback and not the default: Falcon, BLOOM, MPT and GPT-J compute attention inside their
own modules, so the recording attention function never sees their queries and keys. For them the
capture asks the model for eager `output_attentions`, which materialises layers × heads × T²
probabilities at once; that is only done when it fits the memory budget, otherwise a note says
why attention is missing. The probabilities are the model's own, so ALiBi biases (BLOOM, MPT,
Falcon with alibi) and any other per-family detail are included by construction.

The maps are kept in a `StoredAttention`, which answers the same questions as the Q/K-based
AttentionStore (one head's map, pooled maps, summaries) from the stored rows.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from explorer.model.units import fmt_bytes
from explorer.record.attention_fn import supports_attention_interface
from explorer.record.attention_store import AttentionStore, LayerAttention


def eager_bytes(n_layers: int, n_heads: int, t: int, act_bytes: int) -> int:
    """What output_attentions holds at the end of the forward, plus the float32 copy kept."""
    return n_layers * n_heads * t * t * (act_bytes + 4)


@dataclass
class FallbackPlan:
    """What capture() adds to the forward call, and the note when attention is left out."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.kwargs)

    @contextlib.contextmanager
    def running(self, model: nn.Module) -> Iterator[None]:
        """Run the forward on the eager path while the plan is active.

        Why: these models read config._attn_implementation at every call, and some return wrong
        maps from their SDPA path when asked for output_attentions (Falcon in transformers 5.23
        drops the causal mask there). Another thread's forward on the same model meanwhile also
        takes the eager path: same outputs, more memory. Overlapping fallback captures share one
        switch: the first one in saves the setting, the last one out restores it.
        """
        if not self.active:
            yield
            return
        _enter_eager(model)
        try:
            yield
        finally:
            _leave_eager(model)


_SWITCH_LOCK = threading.Lock()
_SWITCHED: weakref.WeakKeyDictionary[nn.Module, tuple[int, list]] = weakref.WeakKeyDictionary()  # model -> (users, saved)


def _enter_eager(model: nn.Module) -> None:
    with _SWITCH_LOCK:
        users, saved = _SWITCHED.get(model, (0, []))
        if users == 0:
            configs = list({id(c): c for c in _configs(model)}.values())
            saved = [(c, getattr(c, "_attn_implementation", None)) for c in configs]
            for c in configs:
                c._attn_implementation = "eager"
        _SWITCHED[model] = (users + 1, saved)


def _leave_eager(model: nn.Module) -> None:
    with _SWITCH_LOCK:
        users, saved = _SWITCHED.get(model, (1, []))
        if users <= 1:
            for c, before in saved:
                c._attn_implementation = before
            _SWITCHED.pop(model, None)
        else:
            _SWITCHED[model] = (users - 1, saved)


def _configs(model: nn.Module) -> list:
    config = getattr(model, "config", None)
    if config is None:
        return []
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return [config, text]


def plan_fallback(model: nn.Module, want_attention: bool, sizes: tuple[int, int, int, int], budget: int) -> FallbackPlan:
    """sizes = (layers, heads, T, bytes per activation). No plan for models with the interface."""
    if not want_attention or supports_attention_interface(model):
        return FallbackPlan()
    n_layers, n_heads, t, act_bytes = sizes
    params = inspect.signature(model.forward).parameters
    if "output_attentions" not in params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return FallbackPlan(note="attention probabilities: this model neither dispatches through transformers' "
                                 "attention interface nor offers output_attentions, so attention was left out")
    need = eager_bytes(n_layers, n_heads, t, act_bytes)
    if need > budget:
        return FallbackPlan(note=f"attention probabilities: this model does not dispatch through transformers' "
                                 f"attention interface, and its eager output_attentions would need "
                                 f"{fmt_bytes(need)} (layers × heads × tokens²), over the memory budget of "
                                 f"{fmt_bytes(budget)}; attention was left out (shorten the prompt or raise the budget)")
    return FallbackPlan(kwargs={"output_attentions": True},
                        note="attention probabilities: this model does not dispatch through transformers' attention "
                             "interface; they come from its eager output_attentions (exact, but T² per head in memory)")


@dataclass
class StoredAttention(AttentionStore):
    """Attention as stored probabilities, per layer (H, T, T) float32 on CPU; explorer.analyse.attention
    reads rows from them instead of recomputing from Q/K. Its layers' records hold no Q/K (None):
    their sizes and place come from the maps."""
    maps: dict[int, torch.Tensor] = field(default_factory=dict)

    def sizes(self, layer: int) -> tuple[int, int]:
        self.layer(layer)                                   # LayerNotKept, with the reason, if absent
        return tuple(self.maps[layer].shape[-2:])

    def on_gpu(self, layer: int) -> bool:
        return self.maps[layer].device.type == "cuda"


def store_from_output(output: Any, keep: set[int], num_heads: int, num_kv_heads: int) -> StoredAttention | None:
    """The model's output_attentions as a StoredAttention for the kept layers (None if absent)."""
    attentions = getattr(output, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        return None
    store = StoredAttention(num_heads=num_heads, num_kv_heads=num_kv_heads)
    for layer, probs in enumerate(attentions):
        if layer not in keep:
            continue
        maps = probs[0].detach().float().cpu()                                        # (H, T, T)
        store.maps[layer] = maps
        store.layers[layer] = LayerAttention(q=None, k=None, mask=None, causal=True, scaling=1.0, softcap=None,
                                             sliding_window=None, device="cpu")
    return store


__all__ = ["FallbackPlan", "StoredAttention", "eager_bytes", "plan_fallback", "store_from_output"]
