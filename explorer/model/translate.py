"""Turn the many exception types of the hub, transformers and torch into one typed, true sentence.

Why a module of its own: the hub's errors arrive wrapped (transformers re-raises them as OSError
with the original as `__cause__`), and telling "no network" from "server error", "unknown repo",
"gated" and "bad token" needs the original. Guessing from the wrapper's text is what made a hub 500
read as "no network" and a bad token as "not a valid model identifier".
"""
from __future__ import annotations

import torch

from explorer.model.errors import (
    BadSource,
    BadToken,
    BadWeights,
    GatedRepo,
    HubError,
    LoadError,
    NoNetwork,
    NotCausal,
    OutOfMemory,
    PickleRefused,
    RemoteCodeRefused,
    UnknownRepo,
    clean_text,
)

OFFLINE_HINT = "Use the embedded model, a local folder or a .gguf file."


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _first_line(exc: BaseException, limit: int = 240) -> str:
    text = clean_text(str(exc))
    line = next((l for l in text.splitlines() if l.strip()), "")
    return line[:limit]


def hub_error(exc: BaseException, name: str) -> LoadError | None:
    """The typed error for a hub failure anywhere in `exc`'s chain, or None if it is not one."""
    from huggingface_hub import errors as hub

    chain = _chain(exc)
    for e in chain:  # the hub wraps a 5xx in LocalEntryNotFoundError ("not in the cache"): look beneath first
        status = _status(e) if isinstance(e, hub.HfHubHTTPError) else None
        if status is not None and status >= 500:
            return HubError(f"The Hugging Face hub answered with a server error ({status}) for {name}. "
                            "It is the hub's side, not your network: try again later.")
    for e in chain:
        if isinstance(e, hub.GatedRepoError):
            return GatedRepo(f"{name} is gated: accept its licence on the hub, and set HF_TOKEN (environment or "
                             "Streamlit secrets) to a token that has been granted access.")
        if isinstance(e, hub.RepositoryNotFoundError):
            return UnknownRepo(f"No model called {name!r} on the hub (or it is private and the token has no "
                               "access). Check the spelling: owner/name.")
        if isinstance(e, hub.RevisionNotFoundError):
            return UnknownRepo(f"{name} has no such revision on the hub.")
        if isinstance(e, hub.HFValidationError):
            return BadSource(f"{name!r} is not a valid hub id: {_first_line(e, 160)}")
        if isinstance(e, (hub.OfflineModeIsEnabled, hub.LocalEntryNotFoundError)):
            return NoNetwork(f"Could not reach the Hugging Face hub to fetch {name}: no network, and it is not in "
                             f"the local cache. {OFFLINE_HINT}")
        if isinstance(e, hub.EntryNotFoundError):
            return BadWeights(f"{name} on the hub lacks a file the load needs: {_first_line(e, 160)}")
        if isinstance(e, hub.HfHubHTTPError):
            status = _status(e)
            if status == 401:
                return BadToken(f"The hub rejected the token (401 Unauthorized) while fetching {name}: HF_TOKEN is "
                                "invalid or expired. Set a valid token, or unset it for public models.")
            if status == 403:
                return GatedRepo(f"The token has no access to {name} (403 Forbidden): request access on the hub.")
            return HubError(f"The Hugging Face hub refused the request for {name} ({status or 'no status'}): "
                            f"{_first_line(e, 160)}")
        if type(e).__name__ in {"ConnectError", "ConnectTimeout", "ConnectionError", "Timeout", "ReadTimeout",
                                "NewConnectionError", "MaxRetryError", "NameResolutionError"}:
            return NoNetwork(f"Could not reach the Hugging Face hub to fetch {name}: no network. {OFFLINE_HINT}")
    return None


def friendly(exc: BaseException, name: str) -> LoadError:
    """One typed error for any exception raised while configuring or loading `name`."""
    if isinstance(exc, LoadError):
        return exc
    text = clean_text(str(exc))
    low = text.lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in low:
        return OutOfMemory(f"Out of memory while loading {name}. Try a smaller precision (nf4) or a smaller model.")
    typed = hub_error(exc, name)
    if typed is not None:
        return typed
    if "trust_remote_code" in low or "custom code" in low:
        return RemoteCodeRefused(f"{name} needs code shipped with the model (trust_remote_code), which is refused "
                                 "by default. The operator can allow it with EXPLORER_ALLOW_REMOTE_CODE=1.")
    if "weights_only" in low or "unpickl" in low:
        return PickleRefused(f"{name}: torch refused to unpickle the checkpoint safely (weights_only): it holds "
                             "objects other than tensors and could run code. Use a safetensors checkpoint.")
    if "unrecognized configuration class" in low or "automodelforcausallm" in low:
        return NotCausal(f"{name} is not a causal language model (its architecture has no causal-LM head), "
                         "so it cannot generate text here.")
    if "does not appear to have a file" in low or "no file named" in low:
        return BadWeights(f"{name} has no weights in a format that can be loaded: {_first_line(exc, 200)}")
    if "safetensors" in low or "header" in low or "size mismatch" in low or "shape" in low:
        return BadWeights(f"The weights of {name} cannot be loaded: {_first_line(exc, 240)}")
    return LoadError(f"Could not load {name}: {type(exc).__name__}: {_first_line(exc, 300)}")
