"""How the rows of a decode batch attend: each over its own columns (exact, on CPU), and without
cuDNN's attention on a GPU. The reasons are in explorer/model/decode_batch.py's docstring."""
from __future__ import annotations

import contextlib
import threading

import torch


def pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` widened to `width` along `dim` with zeros in front (rows are right-aligned)."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


ROWWISE = "explorer_rowwise"
_ROWS = threading.local()     # .starts: each row's first real column; .inner: the model's attention function


def _rowwise_attention(module, query, key, value, attention_mask, **kwargs):
    """query (B, H, Q, D), key/value (B, Hkv, L, D): each row over its own columns, with no mask,
    through the model's own attention function (the call it gets when decoded alone). In a prefill
    (Q == L) a row's queries start at its first real column too; its padding rows come out zero."""
    q_len = query.shape[2]
    outs = []
    for i, s in enumerate(_ROWS.starts):
        first = s if q_len > 1 else 0
        out = _ROWS.inner(module, query[i:i + 1, :, first:], key[i:i + 1, :, s:], value[i:i + 1, :, s:], None,
                          **kwargs)[0]                                       # (1, Q - first, H, D)
        outs.append(pad_left(out, q_len, 1))
    return torch.cat(outs, dim=0), None          # (B, Q, H, D)


def _register_rowwise() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if getattr(_register_rowwise, "done", False):
        return
    AttentionInterface.register(ROWWISE, _rowwise_attention)
    AttentionMaskInterface.register(ROWWISE, sdpa_mask)
    _register_rowwise.done = True


def registered_attention(model: torch.nn.Module):
    """The model's attention function when it is a registered one (sdpa, ours for captures); None for eager."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    name = model.config._attn_implementation
    return ALL_ATTENTION_FUNCTIONS.get(name) if name and name != ROWWISE else None


@contextlib.contextmanager
def rowwise_attention(model: torch.nn.Module, starts: list[int]):
    """Attend row by row where the model's attention is a registered function; eager attention
    (module-local) keeps the masked batch instead."""
    previous = model.config._attn_implementation
    inner = registered_attention(model)
    if inner is None:
        yield
        return
    _register_rowwise()
    _ROWS.starts, _ROWS.inner = starts, inner
    model.config._attn_implementation = ROWWISE
    try:
        yield
    finally:
        model.config._attn_implementation = previous
        _ROWS.starts = _ROWS.inner = None


@contextlib.contextmanager
def no_cudnn_attention(device: torch.device, keep: bool = False):
    """SDPA without its cuDNN backend while these forwards run (see the module docstring)."""
    if device.type != "cuda" or keep or not torch.backends.cuda.cudnn_sdp_enabled():
        yield
        return
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


__all__ = ["ROWWISE", "no_cudnn_attention", "pad_left", "registered_attention", "rowwise_attention"]
