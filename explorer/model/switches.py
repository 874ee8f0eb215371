"""The operator's switches, read in one place so the app and every CLI subcommand agree.

They come from the environment only, never from a widget a visitor can tick: whoever starts the
server or runs the command decides whether pickle checkpoints or model-shipped code may run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ALLOW_PICKLE = "EXPLORER_ALLOW_PICKLE"
ALLOW_REMOTE_CODE = "EXPLORER_ALLOW_REMOTE_CODE"
TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class OperatorSwitches:
    allow_pickle: bool = False  # .bin/.pt checkpoints can run code when unpickled
    trust_remote_code: bool = False  # runs Python shipped with the model


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def operator_switches() -> OperatorSwitches:
    """The switches as the operator set them for this process."""
    return OperatorSwitches(allow_pickle=env_flag(ALLOW_PICKLE), trust_remote_code=env_flag(ALLOW_REMOTE_CODE))
