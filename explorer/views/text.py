"""Text from a prompt or a token, as the views draw it: the one place where the views make text
visible, built on the rule in explorer/model/visible_text.py (which error messages use too).

Every place that displays prompt or token text (chat turns, the token strip, axis labels, hover,
titles, legends, tables, the tour) goes through this module:

  show_hidden(text)        running text (chat turns, prompts): hidden characters as ⟨U+202E⟩
  visible_whitespace(text) one token: also ␣ ↵ ⇥ ␍ for whitespace, ∅ for nothing
  plotly_text(text, n)     a token on a tick label or in hover, for Plotly: visible whitespace, cut,
                           HTML-escaped (Plotly renders <b>, <a href> … in every text it draws)
  plotly_label(text, n)    a token inside a title or legend: plain spaces (no ␣), cut, HTML-escaped
  markdown_text(text)      text inside st.markdown: every ASCII punctuation mark backslash-escaped,
                           so `**` or `[x](javascript:…)` shows as typed
"""
from __future__ import annotations

import html
import re
import string

from explorer.model.visible_text import EMPTY, codepoint, is_hidden, message_text, plain_label, shorten, show_hidden, visible_whitespace

LABEL_CHARS = 12


def _for_plotly(shown: str, max_chars: int) -> str:
    if len(shown) > max_chars:
        shown = shown[: max_chars - 1] + "…"
    shown = html.escape(shown, quote=False)
    if shown.startswith("$") and shown.endswith("$"):   # Plotly would hand "$…$" to MathJax
        shown = "\u200b" + shown
    return shown


def plotly_text(text: str, max_chars: int = LABEL_CHARS) -> str:
    """A token as a Plotly tick label or hover line: whitespace visible, cut to max_chars, HTML-escaped."""
    return _for_plotly(visible_whitespace(text), max_chars)


def plotly_label(text: str, max_chars: int = LABEL_CHARS) -> str:
    """A token or name inside a Plotly title or legend: spaces plain, cut to max_chars, HTML-escaped."""
    return _for_plotly(plain_label(text), max_chars)


_MD_SPECIAL = frozenset(string.punctuation)


def escape_markdown(text: str) -> str:
    """Every ASCII punctuation mark backslash-escaped: Markdown shows it as typed."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def markdown_text(text: str) -> str:
    """Running text (a prompt, a name) inside st.markdown: hidden characters shown, Markdown escaped."""
    return escape_markdown(show_hidden(text))


_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def has_byte_pieces(text: str) -> bool:
    """True for a token shown as raw bytes (<0xD7>): a piece of a character split across tokens."""
    return bool(_BYTE_PIECE.search(text))


BYTE_PIECE_NOTE = ("<0x..> is one byte of a character that the tokenizer split across tokens (UTF-8 uses "
                   "2–4 bytes for a letter outside ASCII); the tokens together spell the character.")


__all__ = ["BYTE_PIECE_NOTE", "EMPTY", "LABEL_CHARS", "codepoint", "escape_markdown", "has_byte_pieces", "is_hidden",
           "markdown_text", "message_text", "plain_label", "plotly_label", "plotly_text", "shorten", "show_hidden",
           "visible_whitespace"]
