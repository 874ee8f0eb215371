"""How many bytes a loaded model holds: the one definition every page shows as its memory.

Resident bytes = the storage of every distinct parameter and buffer, plus the quantization state
bitsandbytes keeps beside a 4-bit or 8-bit weight (absmax, codebook, nested state, row scales).
Why not `get_memory_footprint()`: it counts the tensors' own storage only, so for NF4 it leaves out
the quantization state that the process really holds (105 MiB against 108 MiB for the embedded
model): the chat page and Architecture disagreed by exactly that.
"""
from __future__ import annotations

import torch


def tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def quant_state_bytes(state) -> int:
    """Bytes of a bnb QuantState: absmax and codebook, plus the nested state under double quant."""
    total = tensor_bytes(getattr(state, "absmax", None)) + tensor_bytes(getattr(state, "code", None))
    offset = getattr(state, "offset", None)
    if isinstance(offset, torch.Tensor):
        total += tensor_bytes(offset)
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += quant_state_bytes(nested)
    return total


def side_bytes(t: torch.Tensor) -> int:
    """What bitsandbytes keeps beside one weight: a 4-bit QuantState, or int8's row scales (SCB)."""
    state = getattr(t, "quant_state", None)
    total = quant_state_bytes(state) if state is not None else 0
    scb = getattr(t, "SCB", None)
    return total + (tensor_bytes(scb) if isinstance(scb, torch.Tensor) else 0)


def resident_bytes(model: torch.nn.Module) -> int:
    """Parameters (tied ones once) and buffers as stored now, quantization state included."""
    tensors = list(model.parameters()) + list(model.buffers())          # both skip duplicates
    return sum(tensor_bytes(t) + side_bytes(t) for t in tensors)


RESIDENT_HELP = ("Resident bytes: every parameter (tied ones once) and buffer as stored, plus the "
                 "quantization state bitsandbytes keeps beside 4-bit and 8-bit weights.")

__all__ = ["RESIDENT_HELP", "quant_state_bytes", "resident_bytes", "side_bytes", "tensor_bytes"]
