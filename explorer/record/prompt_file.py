"""A prompt given as a text file: size-bounded, UTF-8 checked, one clear sentence otherwise.

Why here (record, not pages): the same rule serves the page's upload and any command that reads a
prompt from a file; the page only shows the sentence.
"""
from __future__ import annotations

from explorer.model.errors import BadArgument
from explorer.model.units import fmt_bytes
from explorer.model.visible_text import message_text

MAX_PROMPT_FILE_BYTES = 2 * 2**20   # 2 MiB: ~500k tokens of English, beyond any context window we load


def read_prompt_file(name: str, data: bytes, max_bytes: int = MAX_PROMPT_FILE_BYTES) -> str:
    """The file's text, or BadArgument saying why it cannot be a prompt (too large, empty, not UTF-8)."""
    shown = message_text(name, 60)      # a name from outside: hidden characters shown, cut
    if len(data) > max_bytes:
        raise BadArgument(f"{shown} is {fmt_bytes(len(data))}; a prompt file may be at most {fmt_bytes(max_bytes)}.")
    try:
        text = data.decode("utf-8-sig")    # a byte-order mark is not part of the prompt
    except UnicodeDecodeError as exc:
        raise BadArgument(f"{shown} is not UTF-8 text (byte {exc.start} cannot be read); save it as UTF-8 "
                          "and upload it again.") from None
    if "\x00" in text:
        raise BadArgument(f"{shown} holds NUL characters, so it is a binary file, not text.")
    if not text.strip():
        raise BadArgument(f"{shown} is empty; there is nothing to capture.")
    return text
