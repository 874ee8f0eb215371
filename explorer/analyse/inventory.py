"""Every parameter and buffer of a model, counted as a user means it: logical elements, real bytes.

Why its own module: the architecture graph and the memory estimate both start from this list
(one reads what is loaded, the other plans what a precision would store), so neither imports
the other. Two counting traps live here:
- bitsandbytes 4-bit weights (Params4bit) store two values per uint8, so `numel()` is half the
  real parameter count; the original shape lives in `weight.quant_state.shape`.
- tied weights (lm_head sharing the embedding matrix) are one tensor; they are counted once,
  where they first appear, and the other owner is kept as an alias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from explorer.model.footprint import side_bytes, tensor_bytes


@dataclass(frozen=True)
class QuantInfo:
    """How a weight is quantized, read from bitsandbytes' own state (or planned by the estimator)."""

    kind: str              # "nf4" | "fp4" | "int8"
    blocksize: int | None  # elements per absmax block (4-bit); None for int8 (one scale per row)
    double_quant: bool = False

    def __str__(self) -> str:
        parts = [self.kind]
        if self.blocksize:
            parts.append(f"block {self.blocksize}")
        if self.double_quant:
            parts.append("double quant")
        return " · ".join(parts)


@dataclass(frozen=True)
class TensorRecord:
    """One parameter or buffer, counted as a user means it (logical elements, real bytes).

    `bytes` is what `get_memory_footprint()` counts (the tensor's own storage); `state_bytes` is
    what bitsandbytes keeps beside it (absmax, codebooks, row scales), which a GPU allocates too.
    """

    name: str                  # qualified, e.g. "model.layers.0.mlp.up_proj.weight"
    module: str                # qualified name of the owning module
    kind: str                  # "param" | "buffer"
    shape: tuple[int, ...]     # logical shape (unpacked for 4-bit)
    numel: int                 # logical element count
    dtype: str                 # storage dtype, e.g. "uint8" for packed 4-bit
    device: str
    bytes: int
    state_bytes: int = 0
    quant: QuantInfo | None = None
    aliases: tuple[str, ...] = ()  # other qualified names of the same tensor (tied weights)

    @property
    def total_bytes(self) -> int:
        return self.bytes + self.state_bytes


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def logical_shape(param: torch.Tensor) -> tuple[int, ...]:
    """The shape the layer computes with: a Params4bit's packed (n/2, 1) storage unfolded."""
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return tuple(int(d) for d in state.shape)
    return tuple(int(d) for d in param.shape)


def quant_info(param: torch.Tensor) -> QuantInfo | None:
    state = getattr(param, "quant_state", None)
    if state is not None:
        return QuantInfo(kind=str(getattr(state, "quant_type", "4bit")), blocksize=getattr(state, "blocksize", None),
                         double_quant=bool(getattr(state, "nested", False)))
    if type(param).__name__ == "Int8Params" or (param.dtype == torch.int8 and hasattr(param, "SCB")):
        return QuantInfo(kind="int8", blocksize=None)
    return None


def _record(name: str, kind: str, t: torch.Tensor, aliases: tuple[str, ...] = ()) -> TensorRecord:
    shape = logical_shape(t)
    state_bytes = side_bytes(t)
    return TensorRecord(name=name, module=name.rpartition(".")[0], kind=kind, shape=shape,
                        numel=math.prod(shape), dtype=_dtype_name(t.dtype), device=str(t.device),
                        bytes=tensor_bytes(t), state_bytes=state_bytes, quant=quant_info(t), aliases=aliases)


def inventory(model: nn.Module) -> list[TensorRecord]:
    """Every distinct parameter and buffer as stored now, first occurrence first, aliases kept."""
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = id(p)
        if key in first:
            aliases[first[key]].append(name)
        else:
            first[key] = name
            aliases[name] = []
    params = dict(model.named_parameters())
    records = [_record(n, "param", params[n], tuple(aliases.get(n, ()))) for n in params]
    records += [_record(n, "buffer", b) for n, b in model.named_buffers()]
    return records


def count_parameters(model: nn.Module) -> int:
    """Parameters as the architecture defines them: 4-bit weights unpacked, tied weights once."""
    return sum(math.prod(logical_shape(p)) for p in model.parameters())


__all__ = ["QuantInfo", "TensorRecord", "count_parameters", "inventory", "logical_shape", "quant_info"]
