"""Argument types and checks shared by the subcommands, so bad input fails before any model loads.

argparse `type=` functions turn a bad value into argparse's own `error: argument --x: …` and exit
status 2; the checks below raise BadArgument, which the dispatcher in main.py prints the same way.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from explorer.model.errors import BadArgument, env_token
from explorer.model.loading import LoadConfig
from explorer.model.safe_write import check_target
from explorer.model.switches import operator_switches


def layer_list(text: str) -> list[int]:
    """'0,4,8-11' -> [0, 4, 8, 9, 10, 11]."""
    layers: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        a, sep, b = part.partition("-")
        try:
            lo = int(a)
            hi = int(b) if sep else lo
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a layer number or range (e.g. '0,4,8-11')") from None
        if lo < 0 or hi < lo:
            raise argparse.ArgumentTypeError(f"{part!r} is not a range of layer numbers from 0 up")
        layers.extend(range(lo, hi + 1))
    if not layers:
        raise argparse.ArgumentTypeError("no layers given")
    return layers


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def text_arg(text: str, what: str = "the prompt") -> str:
    """Arguments arrive with undecodable bytes as surrogates; say so instead of failing in the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArgument(f"{what} is not valid UTF-8 text.") from None
    return text


def read_text_file(path: Path, what: str = "the prompt file") -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadArgument(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise BadArgument(f"{what} {path} is a folder, not a file.") from None
    except UnicodeDecodeError as exc:
        raise BadArgument(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded).") from None
    except OSError as exc:
        raise BadArgument(f"cannot read {what} {path}: {exc.strerror}.") from None


def writable_out(path: Path) -> Path:
    """Check an output before the (slow) model run, not after it (explorer/model/safe_write.py)."""
    return check_target(path)


def fraction_below_one(text: str) -> float:
    """A finite fraction in [0, 1) (a threshold on a share of importance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share from 0 up to (not including) 1")
    return value


def check_position(position: int, num_tokens: int) -> int:
    """A token position inside the prompt, counted from the start (0…T-1) or the end (-1…-T)."""
    if not -num_tokens <= position < num_tokens:
        raise BadArgument(f"--position {position} is outside the prompt, which has {num_tokens} tokens "
                          f"(0 to {num_tokens - 1}, or -1 to -{num_tokens} from the end).")
    return position


def load_config(model: str, precision: str) -> LoadConfig:
    """The same operator switches and token as the app and every other subcommand."""
    switches = operator_switches()
    return LoadConfig(source=text_arg(model, "the model"), precision=precision, allow_pickle=switches.allow_pickle,
                      trust_remote_code=switches.trust_remote_code, token=env_token())
