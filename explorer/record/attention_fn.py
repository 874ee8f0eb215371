"""The attention function the model runs while a capture records, and its switch.

Why a registered function instead of eager attention: eager `output_attentions` materialises
layers × heads × T² at once. The "explorer" implementation calls SDPA for the output (blockwise
eager arithmetic where SDPA cannot: softcapping) and, while a capture is active in the current
thread, hands the post-RoPE queries (B, H, T, D) and un-repeated keys (B, KV, T, D) of each layer
to that capture's Recorder. What is computed from them afterwards lives in explorer.analyse.attention.
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.attention_store import AttentionStore, LayerAttention
from explorer.record.mask_rule import block_allowed
from explorer.record.offload import Offloader

# Looked up through the registries rather than imported by name: names move between versions
# (the GPU machine runs an older transformers than this one).
sdpa_attention_forward = ALL_ATTENTION_FUNCTIONS["sdpa"]
sdpa_mask = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]

IMPLEMENTATION = "explorer"


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, KV, T, D) -> (B, KV·groups, T, D), each KV head repeated for its query heads."""
    if groups == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None].expand(b, kv, groups, t, d).reshape(b, kv * groups, t, d)


# --------------------------------------------------------------------------------------------
# Recording: what the attention function sees, routed to the capture active in this thread.
# --------------------------------------------------------------------------------------------

class Recorder:
    """Receives one forward's Q/K for one capture: kept where they are for the layers in
    `on_device` (no copy), else offloaded to the host (asynchronously, into pooled pinned memory
    on CUDA).

    `layer_of` maps attention modules to layer indices (found by anatomy, not by a name table);
    `keep` limits which layers are stored (memory budget or user selection).
    """

    def __init__(self, store: AttentionStore, layer_of: dict[int, int], keep: set[int] | None,
                 offload: Callable[[torch.Tensor], torch.Tensor], on_device: set[int] | None = None):
        self.store = store
        self.layer_of = layer_of
        self.keep = keep
        self.offload = offload
        self.on_device = on_device or set()
        self._mask_ids: dict[int, int] = {}
        self._keepalive: list[torch.Tensor] = []   # masks whose id() we rely on during the forward
        self._order = 0
        self.on_value: Callable[[nn.Module, torch.Tensor], None] | None = None   # components: (B, KV, T, hd)

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
        move = Offloader.keep if layer in self.on_device else self.offload
        self.store.layers[layer] = LayerAttention(
            q=move(query.detach()), k=move(key.detach()), mask=mask_index,
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
                              block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
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
        else:
            allowed = block_allowed(r0, r1, t_k, t_k - t_q, is_causal, sliding_window, s.device)
            if allowed is not None:
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
        if recorder.on_value is not None:
            recorder.on_value(module, value)
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


def active_recorder() -> Recorder | None:
    """The recorder of the capture running in this thread, if any (hooks check it is theirs)."""
    return _ACTIVE.get()


__all__ = ["IMPLEMENTATION", "Recorder", "active_recorder", "blockwise_eager_attention", "explorer_attention",
           "explorer_attention_enabled", "recording", "repeat_kv", "supports_attention_interface"]
