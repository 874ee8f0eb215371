"""Bounds on every small file read before it is checked (configs, tokenizer files, capture metadata).

Why: a 1 GiB config.json took the server from 0.8 to 3.9 GiB before anything could say it was
wrong. Sizes are checked with stat() before a byte is read, and JSON is parsed with its nesting
bounded, so a hostile file is refused with one sentence naming the limit instead of exhausting
memory or the interpreter's stack.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from explorer.model.units import MIB, fmt_bytes

CONFIG_MAX = 16 * MIB            # config.json, generation_config.json, index files: a few KB in practice
TOKENIZER_MAX = 128 * MIB        # tokenizer.json of the largest vocabularies is ~35 MiB
CAPTURE_META_MAX = 64 * MIB      # the JSON inside a capture file's header (vocabulary, anatomy, tokens)
JSON_DEPTH_MAX = 64              # no file we read nests deeper than ~6
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja")
CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")

ErrorType = Callable[[str], Exception]


def check_size(path: Path, limit: int, error: ErrorType, what: str | None = None) -> int:
    """The file's size, or `error` naming the size and the limit when it is over it."""
    size = path.stat().st_size
    if size > limit:
        raise error(f"{what or path.name} is {fmt_bytes(size)}; the limit is {fmt_bytes(limit)}.")
    return size


def check_file_sizes(folder: Path, error: ErrorType) -> None:
    """Every config and tokenizer file a load reads from `folder`, against its limit."""
    for names, limit in ((CONFIG_FILES, CONFIG_MAX), (TOKENIZER_FILES, TOKENIZER_MAX)):
        for name in names:
            path = folder / name
            if path.is_file():
                check_size(path, limit, error)


def read_bytes(path: Path, limit: int, error: ErrorType, what: str | None = None) -> bytes:
    check_size(path, limit, error, what)
    with path.open("rb") as f:
        data = f.read(limit + 1)  # the file may have grown since stat()
    if len(data) > limit:
        raise error(f"{what or path.name} is over {fmt_bytes(limit)}, the limit.")
    return data


def depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, d)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def loads(text: str | bytes, what: str, error: ErrorType, limit: int = CONFIG_MAX,
          max_depth: int = JSON_DEPTH_MAX) -> object:
    """json.loads with the size and nesting bounded; every failure is `error` with one sentence."""
    if len(text) > limit:
        raise error(f"{what} is {fmt_bytes(len(text))}; the limit is {fmt_bytes(limit)}.")
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{what} nests deeper than {max_depth} levels, the limit.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({type(exc).__name__}).") from None
    if depth(value) > max_depth:
        raise error(f"{what} nests deeper than {max_depth} levels, the limit.")
    return value


__all__ = ["CAPTURE_META_MAX", "CONFIG_MAX", "JSON_DEPTH_MAX", "TOKENIZER_MAX", "check_file_sizes", "check_size",
           "depth", "loads", "read_bytes"]
