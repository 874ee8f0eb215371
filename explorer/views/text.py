"""Text from a prompt or a token, as an inspection tool must show it: what is really there.

Why: a right-to-left override (U+202E) makes "‮evil.exe‬" read "exe.live", a zero-width space
splits a word without a trace, a tag character carries hidden text. A browser applies these; a
tool that shows what a model reads must not. Every place that displays prompt or token text
(chat turns, the token strip, axis labels, hover, tables, the tour) goes through this module:

  reveal(text)             invisible and control characters as ⟨U+202E⟩; spaces, tabs and new
                           lines kept (running text: chat turns, prompts)
  visible_whitespace(text) the same, and spaces, new lines, tabs and carriage returns drawn as
                           ␣ ↵ ⇥ ␍ (one token: a leading space is most of what sets tokens apart)
"""
from __future__ import annotations

import re
import unicodedata

# Unicode categories that draw nothing or change how the text around them is drawn: controls (Cc),
# format characters (Cf: bidi overrides and isolates, zero-width space/joiners, soft hyphen, word
# joiner, BOM, tag characters), line/paragraph separators, private use, surrogates, unassigned.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
# Characters outside those categories that still draw as nothing (or as a plain space): fillers,
# the combining grapheme joiner, variation selectors other than the emoji ones, odd spaces.
HIDDEN_EXTRA = frozenset(
    [0x00A0, 0x034F, 0x115F, 0x1160, 0x1680, 0x180E, 0x2800, 0x3164, 0xFFA0, 0x202F, 0x205F, 0x3000]
    + list(range(0x2000, 0x200B)) + list(range(0xFE00, 0xFE0E)) + list(range(0xE0100, 0xE01F0)))
KEPT = frozenset("\n\t ")          # running text keeps its layout


def codepoint(ch: str) -> str:
    """One character as ⟨U+202E⟩ (at least four hex digits)."""
    return f"⟨U+{ord(ch):04X}⟩"


def is_hidden(ch: str) -> bool:
    return ord(ch) in HIDDEN_EXTRA or unicodedata.category(ch) in HIDDEN_CATEGORIES


def reveal(text: str) -> str:
    """Invisible and control characters written as ⟨U+XXXX⟩, never applied; layout kept."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(codepoint(c) if c not in KEPT and is_hidden(c) else c for c in text)


_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})


def visible_whitespace(text: str) -> str:
    """One token as shown on a label: whitespace drawn (␣ ↵ ⇥ ␍), hidden characters as ⟨U+XXXX⟩,
    the empty string as ∅."""
    return reveal(text.translate(_WHITESPACE)) or "∅"


_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def has_byte_pieces(text: str) -> bool:
    """True for a token shown as raw bytes (<0xD7>): a piece of a character split across tokens."""
    return bool(_BYTE_PIECE.search(text))


BYTE_PIECE_NOTE = ("<0x..> is one byte of a character that the tokenizer split across tokens (UTF-8 uses "
                   "2–4 bytes for a letter outside ASCII); the tokens together spell the character.")


__all__ = ["BYTE_PIECE_NOTE", "codepoint", "has_byte_pieces", "is_hidden", "reveal", "visible_whitespace"]
