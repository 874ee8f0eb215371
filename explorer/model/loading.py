"""Load a causal LM from any source in any precision, and free it again.

Everything the UI, the CLI and the tests load goes through :func:`load_model`, so the security
defaults (no remote code, no pickle) and the plain-language error messages live in one place.
Sources: the embedded SmolLM2 (a GGUF shipped in a PyPI package, converted once to a cached
safetensors folder), a preset hub id, any hub id, a local folder, or a local ``.gguf`` file.
The settings live in load_config, the GGUF conversion in embedded, the checks made before the
resident model is given up in preflight; their public names are re-exported here for callers.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import threading
import time
from dataclasses import dataclass, field

import psutil
import torch

from explorer.model import translate
from explorer.model.embedded import embedded_model_dir
from explorer.model.errors import LoadError, ModelReplaced, NoModelLoaded, RestoreFailed, reveal, user_message
from explorer.model.footprint import resident_bytes
from explorer.model.load_config import DTYPES, LoadConfig, Progress, bnb_config, plan_precision, say
from explorer.model.precisions import QUANTIZED
from explorer.model.preflight import Preflight, check_weights, load_tokenizer, preflight
from explorer.model.progress import counting_steps


@dataclass
class MemorySnapshot:
    rss_bytes: int
    cuda_allocated: dict[str, int]  # device name -> bytes allocated by torch
    cuda_reserved: dict[str, int]


_load_ids = itertools.count(1)


@dataclass
class LoadedModel:
    """A resident model. `load_id` grows with every load, so a request can tell which model it
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
    load_id: int = field(default_factory=lambda: next(_load_ids))
    retired: bool = False

    def ensure_current(self) -> None:
        """Raise ModelReplaced if this model was unloaded or replaced since the request began.
        Generation and capture entry points (and the model worker) call it before using the model."""
        if self.retired or self.model is None or self.tokenizer is None:
            raise ModelReplaced()

    @property
    def resident_bytes(self) -> int:
        """The memory every page shows for this model (explorer/model/footprint.py says what it counts)."""
        return resident_bytes(self.model)

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


def _from_pretrained(location: str, kwargs: dict, precision: str, notices: list[str],
                     progress: Progress | None = None):
    """The model, falling back to bf16 (with a notice) where bitsandbytes cannot run the precision.
    transformers' weight-loading bar reports its step counts to `progress` (explorer.model.progress)."""
    from transformers import AutoModelForCausalLM

    try:
        with counting_steps(progress):
            return AutoModelForCausalLM.from_pretrained(location, **kwargs), precision
    except Exception as exc:
        if precision not in QUANTIZED or isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
            raise
        if not any(s in str(exc).lower() for s in ("bitsandbytes", "cuda", "gpu", "not supported", "backend")):
            raise
        notices.append(f"{precision} is not available on this machine ({type(exc).__name__}): loaded in bf16 instead.")
        kwargs.pop("quantization_config", None)
        kwargs["dtype"] = torch.bfloat16
        with counting_steps(progress):
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
        say(progress, f"Loading {resolved.name} in {precision}…")
        tokenizer = pre.tokenizer if pre.tokenizer is not None else load_tokenizer(location, cfg, pre.token, resolved.name)
        model, precision = _from_pretrained(location, kwargs, precision, notices, progress)
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
    say(progress, f"Loaded {resolved.name} in {loaded.load_seconds:.1f} s.")
    return loaded


def release_memory() -> None:
    """Give freed memory back: Python's cycles, the CUDA cache, and glibc's arenas (for RSS)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
        a failure after the swap, of any kind, reloads the previous model before the error is raised.
        If that reload fails too, RestoreFailed (a NoModelLoaded) says so: the caller must not assume a model is there."""
        with self._lock:
            checked = preflight(cfg, progress)
            previous = self._current
            previous_cfg = previous.config if previous is not None else None
            self._current = None
            unload(previous)
            del previous
            try:
                self._current = load_model(cfg, progress, checked)
            except BaseException as exc:
                restore_error = self._restore(previous_cfg, progress)
                if not isinstance(exc, Exception):
                    raise
                error = translate.friendly(exc, checked.resolved.name)
                if restore_error is not None:
                    raise RestoreFailed(
                        f"{str(error).rstrip('.')}. The model loaded before could not be restored either "
                        f"({user_message(restore_error)}): no model is loaded now; load one to go on.") from None
                raise error from None
            return self._current

    def _restore(self, previous_cfg: LoadConfig | None, progress: Progress | None) -> Exception | None:
        """Reload the model that was resident before a failed swap; the restore's own failure, if any."""
        if previous_cfg is None:
            return None
        say(progress, "Restoring the previous model…")
        try:
            self._current = load_model(previous_cfg, progress)
        except Exception as exc:  # noqa: BLE001 - reported inside RestoreFailed, beside the original error
            self._current = None
            return exc
        return None

    def adopt(self, loaded: LoadedModel) -> LoadedModel:
        """Make an already loaded model resident (the model worker's adopt: tests, benches, the CLI);
        the model resident before is unloaded, as a load would."""
        loaded.ensure_current()
        with self._lock:
            previous, self._current = self._current, loaded
            if previous is not loaded:
                unload(previous)
            del previous
            return loaded

    def detach(self) -> LoadedModel | None:
        """Stop holding the resident model without unloading it, and hand it to the caller, who owns it
        now (a test's session-wide model lent to the app's registry, then taken back)."""
        with self._lock:
            previous, self._current = self._current, None
            return previous

    def unload(self) -> None:
        with self._lock:
            previous, self._current = self._current, None
            unload(previous)
            del previous
            release_memory()


__all__ = ["LoadConfig", "LoadError", "LoadedModel", "MemorySnapshot", "ModelRegistry", "NoModelLoaded", "Preflight", "RestoreFailed", "check_weights",
           "context_length", "embedded_model_dir", "load_model", "memory_snapshot", "plan_precision", "preflight",
           "release_memory", "unload"]
