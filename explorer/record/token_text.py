"""One token's text, as the views show it: decoded, except where a token holds part of a character.

Why: byte-level tokenizers split a character outside ASCII (Hebrew ח is the two bytes D7 97) across
tokens. Decoding such a token alone gives "�", which hides what the token is. Here the bytes that
do not form a whole character are written as byte pieces, "<0xD7>", the way SentencePiece names its
byte-fallback tokens, and the rest is decoded as usual: " <0xD7>" for a space and a lone lead byte.
"""
from __future__ import annotations

import functools
import re

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: printable Latin-1 bytes stand for themselves, the
    other 68 bytes (controls, space, soft hyphen…) are drawn as U+0100 onwards, in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    decoder, extra = {}, 0
    for b in range(256):
        if b in printable:
            decoder[chr(b)] = b
        else:
            decoder[chr(256 + extra)] = b
            extra += 1
    return decoder


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes of a token, or None when the tokenizer's pieces are not byte-level."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str):
        return None
    m = _BYTE_TOKEN.match(piece)
    if m:                                                   # SentencePiece byte fallback: <0xD7>
        return bytes([int(m.group(1), 16)])
    decoder = _byte_decoder()
    if piece and all(c in decoder for c in piece):          # GPT-2 style byte-level BPE
        return bytes(decoder[c] for c in piece)
    return None


def show_bytes(data: bytes) -> str:
    """Decode what forms whole UTF-8 characters; write every other byte as <0xXX>."""
    out, i = [], 0
    while i < len(data):
        for width in (1, 2, 3, 4):
            try:
                out.append(data[i:i + width].decode("utf-8"))
                i += width
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(f"<0x{data[i]:02X}>")
            i += 1
    return "".join(out)


def token_text(tokenizer, token_id: int) -> str:
    """The token decoded on its own; a token holding part of a character as byte pieces (<0xD7>)."""
    text = tokenizer.decode([int(token_id)])
    if "\ufffd" not in text:
        return text
    raw = token_bytes(tokenizer, token_id)
    if raw is None or b"\xef\xbf\xbd" in raw:               # unknown layout, or a real U+FFFD
        return text
    return show_bytes(raw)


__all__ = ["show_bytes", "token_bytes", "token_text"]
