"""Everything that can be checked before the resident model is given up for a new one.

Why: bad input (an invalid id, no network, an unknown or gated repo, a bad token, a corrupt GGUF,
pickle only, remote code, an encoder, missing or mismatched weights, a broken tokenizer) must fail
here, cheaply, while the model already loaded stays resident; only then does the loader swap.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from explorer.model import checks, read_limits, translate
from explorer.model.embedded import embedded_model_dir, gguf_to_safetensors
from explorer.model.errors import (
    BadConfigFile,
    BadSource,
    BadWeights,
    FileTooLarge,
    GatedRepo,
    LoadError,
    NoNetwork,
    NotCausal,
    PickleRefused,
    RemoteCodeRefused,
    Secret,
    TokenizerError,
    env_token,
    reveal,
)
from explorer.model.load_config import LoadConfig, Progress, plan_precision
from explorer.model.switches import LOCAL_PATHS_OFF, hub_endpoint, hub_offline
from explorer.model.visible_text import message_text
from explorer.presets import EMBEDDED, PRESETS

# The budget of every header check made here (local folders, cached and remote hub weights): they
# read the JSON headers only, never tensor data, so a model of any size is checked in well under
# this many seconds on a local disk (measured: see the report of issue 19 item 8).
HEADER_CHECK_BUDGET_S = 2.0


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
    if not cfg.allow_local_paths:
        return hub_only_source(source)
    checks.check_source_text(source)
    path = Path(os.path.expanduser(source))
    try:
        exists = path.exists()
        looks_local = source.startswith((".", "/", "~")) or source.endswith(".gguf") or exists
        if looks_local:
            shown = message_text(source)
            if not exists:
                raise BadSource(f"No such file or folder: {shown}")
            if path.is_file():
                if path.suffix != ".gguf":
                    raise BadSource(f"{message_text(path.name)} is a file but not a .gguf; give a model folder "
                                    "or a .gguf file.")
                return ResolvedSource("gguf", str(path), path.name)
            if not (path / "config.json").is_file():
                raise BadSource(f"The folder {shown} has no config.json, so it is not a Hugging Face model folder.")
            return ResolvedSource("folder", str(path), path.name)
    except OSError as exc:  # permission denied, a name the filesystem refuses …
        raise BadSource(f"Cannot read {message_text(source)}: {exc.strerror or type(exc).__name__}.") from None
    checks.check_hub_id(source)
    return ResolvedSource("hub", source, source)


def hub_only_source(source: str) -> ResolvedSource:
    """With local paths switched off: a hub id, or the one refusal, decided from the text alone.

    Why never look at the disk: "No such file" vs "no config.json" would tell a visitor what
    exists on the server. Anything that is not plainly owner/name (or name) gets the same answer.
    """
    try:
        checks.check_source_text(source)
        checks.check_hub_id(source)
    except BadSource:
        raise BadSource(LOCAL_PATHS_OFF) from None
    if source.lower().endswith(".gguf"):
        raise BadSource(LOCAL_PATHS_OFF)
    return ResolvedSource("hub", source, source)


def _hub_snapshot(repo_id: str, cfg: LoadConfig, token: Secret | None) -> str:
    """The hub copy of `repo_id` as a folder in the hub cache, so a same-named folder in the server's
    working directory (which transformers would prefer) is never read when local paths are off."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    try:
        return snapshot_download(repo_id, token=reveal(token), allow_patterns=patterns, cache_dir=cfg.cache_dir,
                                 local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: fetch it below
        return snapshot_download(repo_id, token=reveal(token), allow_patterns=patterns, cache_dir=cfg.cache_dir)


def _needs_remote_code(folder: Path) -> bool:
    try:
        config = read_limits.loads(read_limits.read_bytes(folder / "config.json", read_limits.CONFIG_MAX, FileTooLarge),
                                   "config.json", ValueError)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe, so an offline machine gets its answer in seconds instead of after retries."""
    import socket
    from urllib.parse import urlparse

    if hub_offline():
        return False
    url = urlparse(hub_endpoint())
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


def _check_cached_hub_weights(cfg: LoadConfig, name: str, cached: Path, model_config) -> bool:
    """Hub weights already in the cache get the checks a local folder gets (truncated or corrupt
    headers, shapes against the config): a damaged cache file used to pass unchecked and fail after
    the swap. Headers only, so this stays within HEADER_CHECK_BUDGET_S. Returns whether every shard
    was in the cache (else the rest is checked from the hub's headers)."""
    folder = cached.parent
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = read_limits.read_bytes(index, read_limits.CONFIG_MAX, FileTooLarge)
        weight_map = read_limits.loads(data, index.name, BadWeights).get("weight_map")
        if not isinstance(weight_map, dict):
            raise BadWeights(f"{index.name} of {name} is corrupt: it has no weight map.")
        shards = sorted({folder / str(s) for s in weight_map.values()})
    else:
        shards = [cached]
    present = [p for p in shards if p.is_file()]
    headers: dict[str, dict] = {}
    for path in present:
        header = checks.read_safetensors_header(path)
        headers.update({k: v for k, v in header.items() if k != "__metadata__"})
    if headers and model_config is not None:
        checks.check_shapes(model_config, headers, name)
    return len(present) == len(shards)


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
        elif isinstance(cached := huggingface_hub_cached(pre.resolved.location, cfg), str):
            if not _check_cached_hub_weights(cfg, pre.resolved.name, Path(cached), pre.model_config):
                _check_hub_weights(cfg, pre.resolved, pre.token, pre.model_config)  # shards not yet downloaded
        else:
            _check_hub_weights(cfg, pre.resolved, pre.token, pre.model_config)
        pre.tokenizer = load_tokenizer(pre.location, cfg, pre.token, pre.resolved.name)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library error, as one typed sentence
        raise translate.friendly(exc, pre.resolved.name) from None


def load_tokenizer(location: str, cfg: LoadConfig, token: Secret | None, name: str):
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
        name = message_text(cfg.source) if isinstance(cfg.source, str) else repr(cfg.source)
        raise translate.friendly(exc, name) from None


def _check_sizes(location: str, resolved: ResolvedSource, cfg: LoadConfig) -> None:
    """Config and tokenizer files over their limits are refused before they are parsed; a hub model's
    are checked in the cache (config.json is always there by now, the rest once fetched)."""
    folder = Path(location)
    if folder.is_dir():
        read_limits.check_file_sizes(folder, _too_large(resolved.name))
        config = folder / "config.json"
        if config.is_file():
            read_limits.loads(config.read_bytes(), f"{resolved.name}: config.json",
                              BadConfigFile)  # bounded nesting: transformers' parser would overflow the stack
        return
    import huggingface_hub

    for names, limit in ((read_limits.CONFIG_FILES, read_limits.CONFIG_MAX),
                         (read_limits.TOKENIZER_FILES, read_limits.TOKENIZER_MAX)):
        for name in names:
            found = huggingface_hub.try_to_load_from_cache(location, name, cache_dir=cfg.cache_dir)
            if isinstance(found, str):
                read_limits.check_size(Path(found), limit, _too_large(resolved.name), name)


def _too_large(name: str):
    return lambda problem: FileTooLarge(f"{name}: {problem}")


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
        if not cfg.allow_local_paths and os.path.lexists(location):
            location = _hub_snapshot(location, cfg, token)  # errors are typed by preflight()
    elif resolved.kind == "embedded":
        location = str(embedded_model_dir(cache_dir, progress))
    elif resolved.kind == "gguf":
        checks.check_gguf(Path(resolved.location))
        location = str(gguf_to_safetensors(Path(resolved.location), cache_dir, progress))
    _check_sizes(location, resolved, cfg)  # before transformers reads a byte of them
    try:
        model_config = AutoConfig.from_pretrained(location, trust_remote_code=cfg.trust_remote_code,
                                                  token=reveal(token), cache_dir=cfg.cache_dir)
    except Exception as exc:  # noqa: BLE001 - told apart below (remote code, then one typed sentence)
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


__all__ = ["Preflight", "ResolvedSource", "check_weights", "hub_only_source", "hub_reachable",
           "huggingface_hub_cached", "load_tokenizer", "preflight", "resolve_source"]
