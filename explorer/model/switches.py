"""The operator's switches, read in one place so the app and every CLI subcommand agree.

They come from the environment only, never from a widget a visitor can tick: whoever starts the
server or runs the command decides whether pickle checkpoints or model-shipped code may run, and
whether a visitor may name a file or folder on the server's disk. Two readers of one variable
drift apart (one says "1", the other "true"), so nothing else reads these variables.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ALLOW_PICKLE = "EXPLORER_ALLOW_PICKLE"            # .bin checkpoints (unpickling can run code); default off
ALLOW_REMOTE_CODE = "EXPLORER_ALLOW_REMOTE_CODE"  # trust_remote_code models; default off
ALLOW_LOCAL_PATHS = "EXPLORER_ALLOW_LOCAL_PATHS"  # files and folders on the server's disk; default on
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
