"""The one table of precisions: what load_model accepts, and how each stores a model's weights.

Why one table: the loader, the memory estimate, the comparison and the pages all name the same
precisions; their labels and storage rules must not drift apart. Double quantization is a
variant of the 4-bit precisions: `nf4-dq` is loaded as precision "nf4" with
LoadConfig.double_quant=True.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionSpec:
    key: str
    label: str
    weight_kind: str | None    # "nf4" | "fp4" | "int8" | None (no quantization)
    double_quant: bool
    rest_dtype: torch.dtype    # everything not quantized (embeddings, norms, LM head, biases)
    blocksize: int = 64        # bitsandbytes' 4-bit block (elements per absmax)

    @property
    def load(self) -> str:
        """The precision name load_model takes for this entry."""
        return self.weight_kind or self.key


# The rest dtypes follow explorer.model.loading: 4-bit computes in bf16, int8 loads in fp16.
PRECISIONS: dict[str, PrecisionSpec] = {p.key: p for p in (
    PrecisionSpec("nf4-dq", "NF4 + double quant", "nf4", True, torch.bfloat16),
    PrecisionSpec("nf4", "NF4", "nf4", False, torch.bfloat16),
    PrecisionSpec("fp4-dq", "FP4 + double quant", "fp4", True, torch.bfloat16),
    PrecisionSpec("fp4", "FP4", "fp4", False, torch.bfloat16),
    PrecisionSpec("int8", "int8 (LLM.int8)", "int8", False, torch.float16),
    PrecisionSpec("bf16", "bf16", None, False, torch.bfloat16),
    PrecisionSpec("fp16", "fp16", None, False, torch.float16),
    PrecisionSpec("fp32", "fp32", None, False, torch.float32),
)}

# What load_model accepts, in the order the pickers offer them (double quant is a separate switch).
LOAD_PRECISIONS: tuple[str, ...] = tuple(k for k, p in PRECISIONS.items() if not p.double_quant)
QUANTIZED: frozenset[str] = frozenset(p.key for p in PRECISIONS.values() if p.weight_kind and not p.double_quant)

__all__ = ["LOAD_PRECISIONS", "PRECISIONS", "QUANTIZED", "PrecisionSpec"]
