"""What a prompt must be before it reaches the tokenizer or the model, each failure its own typed error.

Why: the API's capture() used to fail deep inside with an IndexError (a token id past the
embedding table), a jinja UndefinedError (a chat message without content) or a TypeError /
UnicodeEncodeError (a lone surrogate); a caller could not tell these apart from a bug.
"""
from __future__ import annotations

import torch

from explorer.model.errors import BadMessages, BadText, TokenOutOfVocabulary

ROLES = ("system", "user", "assistant", "tool")


def check_text(text: str, what: str = "the prompt") -> str:
    """Valid Unicode text: no lone surrogate (what undecodable bytes become in Python strings)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadText(f"{what} is not valid Unicode text: character {exc.start} is a lone surrogate "
                      f"(U+{ord(text[exc.start]):04X}).") from None
    return text


def check_messages(messages: list) -> list:
    """Chat messages: each a dict with a known role and text content."""
    if not messages:
        raise BadMessages("the chat has no messages.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadMessages(f"chat message {i} is a {type(m).__name__}, not a dict with role and content.")
        if m.get("role") not in ROLES:
            raise BadMessages(f"chat message {i} has role {m.get('role')!r}; choose one of {', '.join(ROLES)}.")
        if not isinstance(m.get("content"), str):
            raise BadMessages(f"chat message {i} has no text content (content is {type(m.get('content')).__name__}).")
        check_text(m["content"], f"chat message {i}")
    return messages


def check_ids(ids: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    """(T,) token ids inside the model's embedding table."""
    if ids.numel() and vocab_size is not None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise TokenOutOfVocabulary(f"token id {bad} is outside the model's vocabulary (0–{vocab_size - 1}).")
    return ids


def vocab_size(model) -> int | None:
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return getattr(embed, "num_embeddings", None)


__all__ = ["check_ids", "check_messages", "check_text", "vocab_size"]
