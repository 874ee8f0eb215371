"""What to load and how, and what this machine can actually run of it.

Why a module of its own: the settings and their checks are needed by the preflight, the loader,
the pages and the CLI alike, before any model or file is touched; keeping them below the loader
lets the preflight live beside it without an import circle.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from explorer.model.errors import AttentionUnavailable, BadConfig, Secret, as_secret
from explorer.model.precisions import LOAD_PRECISIONS, QUANTIZED
from explorer.presets import EMBEDDED

Precision = Literal["nf4", "fp4", "int8", "bf16", "fp16", "fp32"]   # LOAD_PRECISIONS, for type checkers
COMPUTE_DTYPES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
DEVICE_MAPS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flash_attention_2", "flex_attention")
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

Progress = Callable[[str], None]


def say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


@dataclass
class LoadConfig:
    """What to load and how. The token is kept in a `Secret`, so no repr, log or `asdict` shows it."""

    source: str = EMBEDDED  # preset key, hub id, local folder or .gguf path
    precision: Precision = "nf4"
    double_quant: bool = True  # 4-bit only: quantize the quantization constants too
    # 4-bit only: dtype of the matmuls. "auto": bf16 on a GPU or a CPU with native bf16, else fp32
    # (a CPU that emulates bf16 runs the 4-bit path ~5x slower).
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device_map: str = "auto"
    allow_pickle: bool = False  # operator opt-in: .bin checkpoints can run code when unpickled
    trust_remote_code: bool = False  # operator opt-in: runs Python shipped with the model
    allow_local_paths: bool = True  # operator switch: False = presets and hub ids only (served to others)
    attn_implementation: str | None = None
    cache_dir: str | None = None
    token: Secret | None = field(default=None, repr=False, compare=False)

    def __setattr__(self, name, value) -> None:
        super().__setattr__(name, as_secret(value) if name == "token" else value)

    def validate(self) -> None:
        """Every field against its choices, before anything is touched; the message lists them."""
        def choose(field_name: str, value, choices) -> None:
            if value not in choices:
                raise BadConfig(f"Unknown {field_name} {value!r}; choose one of {', '.join(map(str, choices))}.")

        if not isinstance(self.source, str):
            raise BadConfig(f"The source must be text (a preset, hub id or path), not {type(self.source).__name__}.")
        choose("precision", self.precision, LOAD_PRECISIONS)
        choose("compute dtype", self.compute_dtype, COMPUTE_DTYPES)
        if not (isinstance(self.device_map, str) and (self.device_map in DEVICE_MAPS
                                                     or re.fullmatch(r"cuda(:\d+)?", self.device_map))):
            choose("device map", self.device_map, DEVICE_MAPS + ("cuda", "cuda:N"))
        if self.attn_implementation is not None:
            choose("attention implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
            check_attention(self.attn_implementation, self.device_map)
        for name in ("double_quant", "allow_pickle", "trust_remote_code", "allow_local_paths"):
            if not isinstance(getattr(self, name), bool):
                raise BadConfig(f"{name} must be True or False, not {getattr(self, name)!r}.")


def check_attention(name: str, device_map: str = "auto") -> None:
    """An attention implementation against this machine, before the swap: flash_attention_2 needs a
    CUDA GPU (the model placed on it) and the flash-attn package; the others run everywhere."""
    if name != "flash_attention_2":
        return
    if not torch.cuda.is_available() or device_map == "cpu":
        raise AttentionUnavailable("flash_attention_2 needs a CUDA GPU, and this model would run on the CPU; "
                                   "choose sdpa or eager.")
    from transformers.utils import is_flash_attn_2_available

    if not is_flash_attn_2_available():
        raise AttentionUnavailable("flash_attention_2 needs the flash-attn package, which is not installed here; "
                                   "choose sdpa or eager.")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: without them torch emulates bf16 matmuls, several times slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def bnb_config(precision: str, double_quant: bool = True, compute_dtype: str = "bf16"):
    """A BitsAndBytesConfig with every default we rely on set explicitly (the library's are fp4/fp32)."""
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=precision,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=DTYPES[compute_dtype])


def plan_precision(cfg: LoadConfig) -> tuple[str, str, list[str]]:
    """Pick what this machine can actually run, and say so when it differs from what was asked."""
    notices: list[str] = []
    cfg.validate()
    precision, compute = cfg.precision, cfg.compute_dtype
    cuda = torch.cuda.is_available()
    if compute == "auto":  # LoadedModel.compute_dtype records the choice; the model card shows it
        compute = "bf16" if cuda or cpu_has_native_bf16() else "fp32"
    if precision in QUANTIZED and importlib.util.find_spec("bitsandbytes") is None:
        notices.append(f"bitsandbytes is not installed, so {precision} is unavailable: loaded in bf16 instead.")
        precision = "bf16"
    if cuda and not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            notices.append("This GPU has no bf16 support: loaded in fp16 instead.")
            precision = "fp16"
        if precision in {"nf4", "fp4"} and compute == "bf16":
            notices.append("This GPU has no bf16 support: 4-bit compute dtype set to fp16.")
            compute = "fp16"
    return precision, compute, notices


__all__ = ["ATTN_IMPLEMENTATIONS", "COMPUTE_DTYPES", "DEVICE_MAPS", "DTYPES", "LoadConfig", "Precision", "Progress",
           "bnb_config", "cpu_has_native_bf16", "plan_precision", "say"]
