"""The one rule for showing text that came from outside (a prompt, a token, a path, an exception's
message): what is really there is shown, nothing is applied.

Why: a right-to-left override (U+202E) makes "‮evil.exe‬" read "exe.live", a zero-width space
splits a word without a trace, a tag character carries hidden text, an escape code recolours a
terminal. A browser or a terminal applies these; a tool that shows what a model reads must not.
This module sits at the bottom (explorer/model) so that error messages built there follow the same
rule as the views; explorer/views/text.py adds the renderings (Plotly, Markdown) on top of it.

  show_hidden(text)        invisible and control characters as ⟨U+202E⟩; spaces, tabs and new lines
                           kept (running text: chat turns, prompts)
  visible_whitespace(text) the same, and spaces, new lines, tabs and carriage returns drawn as
                           ␣ ↵ ⇥ ␍ (one token on an axis label: a leading space sets tokens apart)
  plain_label(text)        the same for a title or a legend: spaces stay spaces (a title is read as
                           a sentence), line breaks drawn as ↵ ⇥ ␍ so they cannot break the line
  message_text(text)       one line of a message: like plain_label, cut to a length
"""
from __future__ import annotations

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
EMPTY = "∅"

_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"})
_LINE_BREAKS = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})


def codepoint(ch: str) -> str:
    """One character as ⟨U+202E⟩ (at least four hex digits)."""
    return f"⟨U+{ord(ch):04X}⟩"


def is_hidden(ch: str) -> bool:
    return ord(ch) in HIDDEN_EXTRA or unicodedata.category(ch) in HIDDEN_CATEGORIES


def show_hidden(text: str) -> str:
    """Invisible and control characters written as ⟨U+XXXX⟩, never applied; layout kept."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(codepoint(c) if c not in KEPT and is_hidden(c) else c for c in text)


def visible_whitespace(text: str) -> str:
    """One token as shown on a label: whitespace drawn (␣ ↵ ⇥ ␍), hidden characters as ⟨U+XXXX⟩,
    the empty string as ∅."""
    return show_hidden(text.translate(_WHITESPACE)) or EMPTY


def plain_label(text: str) -> str:
    """Text inside a title or legend: spaces as spaces, line breaks drawn (↵ ⇥ ␍), hidden characters
    as ⟨U+XXXX⟩, only-whitespace or empty text drawn as for a token (it would vanish otherwise)."""
    if not text.strip():
        return visible_whitespace(text)
    return show_hidden(text.translate(_LINE_BREAKS))


def shorten(text: str, limit: int) -> str:
    """Cut to `limit` characters with an ellipsis that says how long the text was."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def message_text(text: str, limit: int = 80) -> str:
    """A user's input inside a one-line message: hidden characters and line breaks visible, long text cut."""
    return shorten(show_hidden(text.translate(_LINE_BREAKS)), limit)


__all__ = ["EMPTY", "HIDDEN_CATEGORIES", "HIDDEN_EXTRA", "codepoint", "is_hidden", "message_text", "plain_label",
           "shorten", "show_hidden", "visible_whitespace"]
