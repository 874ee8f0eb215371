"""Where architecture-only configs come from: a preset, a JSON file or upload, or the hub.

Every source goes through `config_from_dict`, so bad input gets the same plain-language errors
wherever it came from. No weights are read here.
"""
from __future__ import annotations

from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
from transformers import CONFIG_MAPPING, AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from explorer.model import (
    preflight,  # called through the module: tests put the hub out of reach
    read_limits,
)
from explorer.model.checks import check_hub_id, check_source_text
from explorer.model.embedded import gguf_config
from explorer.model.errors import BadSource, clean_text
from explorer.model.translate import hub_error
from explorer.model.visible_text import message_text
from explorer.presets import EMBEDDED, PRESETS, preset_dict


class ArchitectureError(ValueError):
    """A config or model that cannot be shown; the message is meant for the user as is."""


class ConfigError(ArchitectureError):
    """A config that cannot be turned into a causal-LM architecture; the message is for the user."""


# Keys transformers would act on beyond describing the architecture: remote code, quantized checkpoints.
_IGNORED_KEYS = ("auto_map", "quantization_config", "_name_or_path", "transformers_version")


def preset_config(key: str):
    """The transformers config of a preset, from the file shipped with it."""
    if key not in PRESETS:
        raise ConfigError(f"No preset called {key!r}; known: {', '.join(PRESETS)}.")
    return config_from_dict(preset_dict(key), source=key)


def config_from_dict(data: object, source: str = "config"):
    """A transformers config for a causal LM, or a ConfigError saying what is wrong with `data`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a JSON object (key: value pairs), "
                          f"not a {type(data).__name__}.")
    model_type = data.get("model_type")
    if not model_type:
        raise ConfigError(f"{source}: no 'model_type' field, so the architecture is unknown. "
                          "A Hugging Face config.json names it, e.g. \"model_type\": \"llama\".")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{source}: model_type {model_type!r} is unknown to this transformers version; "
                          "models that need their own code (trust_remote_code) are not opened here.")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError(f"{source}: a {model_type!r} model is not a causal language model (it has no "
                          "text-generating head in transformers), so this explorer cannot show it.")
    fields = {k: v for k, v in data.items() if k not in _IGNORED_KEYS and k != "model_type"}
    try:
        return AutoConfig.for_model(model_type, **fields)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad values
        raise ConfigError(f"{source}: the {model_type!r} config has invalid values: {exc}") from None


def config_from_json(text: str | bytes, source: str = "config.json"):
    """Size and nesting bounded before parsing (explorer/model/read_limits.py)."""
    return config_from_dict(read_limits.loads(text, source, ConfigError), source)


def config_from_path(path: str | Path):
    """A config.json file, or a model folder holding one."""
    try:
        check_source_text(str(path))
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise ConfigError(f"No config.json at {message_text(str(path))}.")
        data = read_limits.read_bytes(p, read_limits.CONFIG_MAX, ConfigError, p.name)
    except BadSource as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read {message_text(str(path))}: {exc.strerror or type(exc).__name__}.") from None
    return config_from_json(data, source=str(p))


def config_from_hub(repo_id: str, token: str | None = None):
    """The config of a hub model (a few KB; no weights). Clear errors offline and for gated repos."""
    repo_id = repo_id.strip()
    try:
        check_source_text(repo_id)
        check_hub_id(repo_id)
    except BadSource as exc:
        raise ConfigError(str(exc)) from None
    if repo_id.count("/") != 1:
        raise ConfigError(f"{repo_id!r} is not a hub id; it looks like owner/name.")
    try:
        path = huggingface_hub.hf_hub_download(repo_id, "config.json", token=token, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: go online below
        path = None
    if path is None:
        if not preflight.hub_reachable():
            raise ConfigError(f"The hub is out of reach (offline), and {repo_id} is not in the local cache. "
                              "Use a preset, a local config.json or an upload instead.")
        path = _download_config(repo_id, token)
    data = read_limits.read_bytes(Path(path), read_limits.CONFIG_MAX, ConfigError, f"{repo_id}'s config.json")
    return config_from_json(data, source=repo_id)


def _download_config(repo_id: str, token: str | None) -> str:
    """config.json fetched from the hub, each way it can fail told apart in the user's words."""
    try:
        return huggingface_hub.hf_hub_download(repo_id, "config.json", token=token)
    except GatedRepoError:
        raise ConfigError(f"{repo_id} is gated: its config needs HF_TOKEN with the licence accepted. "
                          "The Llama and Gemma presets open without it.") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"No model {repo_id} on the hub (or it is private).") from None
    except LocalEntryNotFoundError:
        raise ConfigError(f"Could not reach the hub to fetch {repo_id}'s config, and it is not in the local "
                          "cache. Use a preset, a local config.json or an upload instead.") from None
    except EntryNotFoundError:
        raise ConfigError(f"{repo_id} has no config.json, so it is not a transformers model.") from None
    except Exception as exc:  # noqa: BLE001 - the hub's other errors, put into one sentence below
        typed = hub_error(exc, repo_id)
        if typed is not None:
            raise ConfigError(str(typed)) from None
        raise ConfigError(f"Could not fetch {repo_id}'s config: {type(exc).__name__}: "
                          f"{clean_text(str(exc))[:200]}") from None


def embedded_config():
    """The embedded SmolLM2's config: read from its GGUF when the package is there, else the
    shipped copy of the same facts."""
    try:
        return gguf_config()
    except Exception:  # noqa: BLE001 - package missing or GGUF unreadable: the copy is the same facts
        return preset_config(EMBEDDED)


__all__ = ["ArchitectureError", "ConfigError", "config_from_dict", "config_from_hub", "config_from_json",
           "config_from_path", "embedded_config", "preset_config"]
