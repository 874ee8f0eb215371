"""How much memory a model takes in each precision, from its meta-device skeleton, and which GPUs it fits.

Why plan per tensor instead of `params × bits / 8`: bitsandbytes quantizes only the plain
Linear (and GPT-2 Conv1D) weights that transformers' own skip list allows, and keeps the LM
head, tied weights, embeddings, norms and biases in the load dtype. On Llama 3.1 8B that rule
alone is 2.1 GB of the 5.59 GB NF4 footprint. The plan reuses transformers' skip list, so the
estimate follows the library rather than a table of names.

Two totals, because users meet both:
- footprint: what `model.get_memory_footprint()` reports (parameters and buffers as stored);
- allocated: footprint plus bitsandbytes' quantization state (absmax per block, codebooks, int8
  row scales), which the GPU holds too and which `torch.cuda.memory_allocated` shows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import nn

from explorer.analyse.inventory import QuantInfo, TensorRecord, inventory
from explorer.model.precisions import PRECISIONS, PrecisionSpec

GIB = 1024**3

BUILD_DTYPE = torch.bfloat16  # dtype explorer.analyse.architecture.model_from_config builds skeletons in

REPORTED = ("nf4-dq", "nf4", "fp4", "int8", "bf16", "fp32")


def precision_key(precision: str, double_quant: bool = True) -> str:
    """Map explorer.model.loading's (precision, double_quant) pair onto a key of PRECISIONS."""
    if precision in {"nf4", "fp4"} and double_quant:
        return f"{precision}-dq"
    if precision not in PRECISIONS:
        raise KeyError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return precision


def _spec(precision: str | PrecisionSpec) -> PrecisionSpec:
    if isinstance(precision, PrecisionSpec):
        return precision
    if precision not in PRECISIONS:
        raise KeyError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def quantized_modules(model: nn.Module, spec: PrecisionSpec) -> set[str]:
    """Names of the modules bitsandbytes would replace, by transformers' own rules."""
    if spec.weight_kind is None:
        return set()
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
    return {name for name, m in model.named_modules()
            if (type(m) is nn.Linear or isinstance(m, Conv1D)) and should_convert_module(name, skip)}


def _four_bit_state_bytes(numel: int, spec: PrecisionSpec) -> int:
    """absmax per block plus codebook; under double quant the absmax is itself 8-bit quantized
    in blocks of 256 with an fp32 absmax, its own 256-entry codebook, and an fp32 offset."""
    blocks = math.ceil(numel / spec.blocksize)
    code = 16 * 4
    if not spec.double_quant:
        return blocks * 4 + code
    return blocks * 1 + code + 4 + math.ceil(blocks / 256) * 4 + 256 * 4


def _out_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return int(module.weight.shape[1])  # Conv1D stores (in, out)


def planned_inventory(model: nn.Module, precision: str | PrecisionSpec) -> list[TensorRecord]:
    """The tensors a load in `precision` would hold, planned from a meta skeleton built in bf16."""
    spec = _spec(precision)
    quantized = quantized_modules(model, spec)
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    rest_size = torch.empty((), dtype=spec.rest_dtype).element_size()
    rest_name = str(spec.rest_dtype).removeprefix("torch.")
    planned = []
    for r in inventory(model):
        if r.kind == "buffer":
            follows = r.dtype == str(BUILD_DTYPE).removeprefix("torch.")
            if follows:
                r = replace(r, dtype=rest_name, bytes=r.numel * rest_size)
            planned.append(r)
            continue
        leaf = r.name.rpartition(".")[2]
        if r.module in quantized and leaf == "weight":
            if spec.weight_kind == "int8":
                rows = _out_features(model.get_submodule(r.module))
                r = replace(r, dtype="int8", bytes=r.numel, state_bytes=rows * 4,
                            quant=QuantInfo("int8", None))
            else:
                r = replace(r, dtype="uint8", bytes=(r.numel + 1) // 2,
                            state_bytes=_four_bit_state_bytes(r.numel, spec),
                            quant=QuantInfo(spec.weight_kind, spec.blocksize, spec.double_quant))
        elif keep_fp32 and any(r.module == k or r.module.endswith("." + k) or f".{k}." in f".{r.module}."
                               for k in keep_fp32):
            r = replace(r, dtype="float32", bytes=r.numel * 4)
        else:
            r = replace(r, dtype=rest_name, bytes=r.numel * rest_size)
        planned.append(r)
    return planned


@dataclass(frozen=True)
class MemoryEstimate:
    precision: str
    label: str
    params: int
    quantized_params: int
    footprint_bytes: int     # = get_memory_footprint() of a real load
    allocated_bytes: int     # footprint + quantization state

    @property
    def allocated_gib(self) -> float:
        return self.allocated_bytes / GIB


def estimate_memory(model: nn.Module, precision: str | PrecisionSpec,
                    compute_dtype: torch.dtype | None = None) -> MemoryEstimate:
    """Memory of `model` (a meta skeleton from model_from_config) loaded in `precision`.

    `compute_dtype` matters for 4-bit only: bitsandbytes keeps what it does not quantize
    (embeddings, norms, often the LM head) in the compute dtype, which the loader makes fp32 on a
    CPU without native bf16, so a small model's footprint grows by a third there.
    """
    spec = _spec(precision)
    if compute_dtype is not None and spec.weight_kind in {"nf4", "fp4"}:
        spec = replace(spec, rest_dtype=compute_dtype)
    records = planned_inventory(model, spec)
    params = [r for r in records if r.kind == "param"]
    return MemoryEstimate(
        precision=spec.key, label=spec.label,
        params=sum(r.numel for r in params),
        quantized_params=sum(r.numel for r in params if r.quant is not None),
        footprint_bytes=sum(r.bytes for r in records),
        allocated_bytes=sum(r.total_bytes for r in records),
    )


def estimate_all(model: nn.Module, precisions: tuple[str, ...] = REPORTED) -> list[MemoryEstimate]:
    return [estimate_memory(model, p) for p in precisions]


# --------------------------------------------------------------------------- GPU fit


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float


GPUS: tuple[GPU, ...] = (
    GPU("Laptop 6 GB (RTX 3060 / 4050 Laptop)", 6),
    GPU("8 GB (RTX 4060 / 3070)", 8),
    GPU("12 GB (RTX 3060 / 4070)", 12),
    GPU("16 GB (T4 / RTX 4080 / V100)", 16),
    GPU("24 GB (RTX 4090 / L4 / A10G)", 24),
    GPU("40 GB (A100 40GB)", 40),
    GPU("80 GB (A100 / H100 80GB)", 80),
)

RUNTIME_RESERVE_GIB = 1.0  # CUDA context, cuBLAS workspace and allocator slack


def kv_cache_bytes(config, tokens: int, bytes_per_value: int = 2) -> int:
    """Keys and values for `tokens` positions across all layers (one sequence, bf16/fp16)."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return 2 * layers * kv_heads * head_dim * tokens * bytes_per_value


def gpu_fit(estimates: list[MemoryEstimate], config, context_tokens: int = 4096,
            gpus: tuple[GPU, ...] = GPUS, reserve_gib: float = RUNTIME_RESERVE_GIB) -> pd.DataFrame:
    """One row per precision: memory needed to chat (weights + KV cache + reserve) and fit per GPU."""
    kv = kv_cache_bytes(config, context_tokens)
    rows = []
    for e in estimates:
        need = e.allocated_bytes + kv + reserve_gib * GIB
        row = {"precision": e.label, "weights GiB": round(e.allocated_bytes / GIB, 2),
               f"KV cache GiB ({context_tokens} tok)": round(kv / GIB, 2), "needed GiB": round(need / GIB, 2)}
        for gpu in gpus:
            row[gpu.name] = need <= gpu.memory_gib * GIB
        rows.append(row)
    return pd.DataFrame(rows)
