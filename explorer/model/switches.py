"""The operator's switches, read in one place so the app and every CLI subcommand agree.

Every environment variable the project reads is named and read here: the EXPLORER_* switches, the
hub's HF_HUB_OFFLINE and HF_ENDPOINT, and the token variables (explorer/model/errors.py wraps the
token in a Secret). Every on/off one goes through `env_flag` (1/true/yes/on, 0/false/no/off), so
`=false` means off wherever it is read.

They come from the environment only, never from a widget a visitor can tick: whoever starts the
server or runs the command decides whether pickle checkpoints or model-shipped code may run, and
whether a visitor may name a file or folder on the server's disk. Two readers of one variable
drift apart (one says "1", the other "true"), so nothing else reads these variables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ALLOW_PICKLE = "EXPLORER_ALLOW_PICKLE"            # .bin checkpoints (unpickling can run code); default off
ALLOW_REMOTE_CODE = "EXPLORER_ALLOW_REMOTE_CODE"  # trust_remote_code models; default off
ALLOW_LOCAL_PATHS = "EXPLORER_ALLOW_LOCAL_PATHS"  # files and folders on the server's disk; default on
AUTOLOAD = "EXPLORER_AUTOLOAD"                    # load the embedded model on first launch; default on
CACHE = "EXPLORER_CACHE"                          # where converted models are cached
WORKER_STATUS = "EXPLORER_WORKER_STATUS"          # a JSON file the model worker keeps current; default none
HUB_OFFLINE = "HF_HUB_OFFLINE"                    # huggingface_hub's own switch: no network calls
HUB_ENDPOINT = "HF_ENDPOINT"                      # huggingface_hub's own: another hub (a mirror)
TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")   # the hub token; the first one set is used
DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})

LOCAL_PATHS_OFF = ("Files and folders on the server are turned off here: choose a preset, or enter a hub id "
                   "such as owner/name.")


@dataclass(frozen=True)
class OperatorSwitches:
    allow_pickle: bool = False  # .bin/.pt checkpoints can run code when unpickled
    trust_remote_code: bool = False  # runs Python shipped with the model
    allow_local_paths: bool = True  # the app only: False = presets and hub ids only (served to others)


def env_flag(name: str, default: bool = False) -> bool:
    """True for 1/true/yes/on, False for 0/false/no/off, `default` when unset or anything else."""
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    return default


def local_paths_allowed() -> bool:
    """May a visitor name a file or folder on the server's disk as a model source?

    On by default, for the usual local run. Off (EXPLORER_ALLOW_LOCAL_PATHS=0) when the app is
    served to others: then the local-path source is not offered, and any path is refused with
    LOCAL_PATHS_OFF before the disk is looked at, so the answer says nothing about what exists.
    """
    return env_flag(ALLOW_LOCAL_PATHS, default=True)


def operator_switches() -> OperatorSwitches:
    """The switches as the operator set them for this process."""
    return OperatorSwitches(allow_pickle=env_flag(ALLOW_PICKLE), trust_remote_code=env_flag(ALLOW_REMOTE_CODE),
                            allow_local_paths=local_paths_allowed())


def autoload_enabled() -> bool:
    """Load the embedded model on a session's first page? On unless EXPLORER_AUTOLOAD is 0/false/no/off."""
    return env_flag(AUTOLOAD, default=True)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, parsed as every other switch here (huggingface_hub accepts the same words)."""
    return env_flag(HUB_OFFLINE)


def hub_endpoint() -> str:
    """The hub's address: HF_ENDPOINT, as huggingface_hub reads it, else huggingface.co."""
    return os.environ.get(HUB_ENDPOINT) or DEFAULT_ENDPOINT


def env_tokens() -> list[str]:
    """The values of the token variables that are set, in TOKENS order (plain strings: errors.py wraps
    the one it passes on in a Secret and scrubs every one of them from messages)."""
    return [value for value in (os.environ.get(name) for name in TOKENS) if value]


def cache_root() -> Path:
    """Where converted models are cached: $EXPLORER_CACHE, else $XDG_CACHE_HOME/llm-explorer."""
    root = os.environ.get(CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llm-explorer")
    return Path(root)


def worker_status_file() -> str | None:
    """The file the model worker keeps its status in (busy, queued, running session), if asked for."""
    return os.environ.get(WORKER_STATUS) or None
