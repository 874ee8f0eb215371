"""Shared pieces of the internals figures: safe token labels, the clickable token strip, layout.

Token text comes from the prompt, so it is untrusted; every label goes through
explorer.views.text.plotly_text (tick labels, hover) or plotly_label (titles, legends), which write
<, > and & as entities (Plotly renders a subset of HTML in every text it draws).
"""
from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.views.text import BYTE_PIECE_NOTE, LABEL_CHARS, has_byte_pieces, plotly_label, plotly_text, visible_whitespace

Span = tuple[int, int]
FOCUS_COLOR = "#E45756"
CLICK_MARKER = "rgba(0,0,0,0)"   # invisible, but still hoverable and clickable

STRIP_ROW_CHARS = 64       # characters per line of the token strip
STRIP_MAX_TOKENS = 160

def span_label(span: Span, texts: Sequence[str], max_chars: int = LABEL_CHARS) -> str:
    """Unique axis label of one heatmap cell: "12 ␣the" or, pooled, "8–15 ␣the…"."""
    a, b = span
    if b - a <= 1:
        return f"{a} {plotly_text(texts[a], max_chars)}"
    return f"{a}–{b - 1} {plotly_text(texts[a], max(4, max_chars // 2))}…"


def span_labels(spans: Sequence[Span], texts: Sequence[str], max_chars: int = LABEL_CHARS) -> np.ndarray:
    """Unique labels of heatmap cells, as an object array (see `labels`)."""
    return labels([span_label(s, texts, max_chars) for s in spans])


def cell_of(spans: Sequence[Span], position: int | None) -> int | None:
    """Index of the cell holding `position`, or None when it is outside these spans."""
    if position is None:
        return None
    for i, (a, b) in enumerate(spans):
        if a <= position < b:
            return i
    return None


def f32(x) -> np.ndarray:
    """float32 for Plotly: sent as a compact typed array (float64 is twice the bytes, float16 a list)."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def labels(values: Sequence[str]) -> np.ndarray:
    """Axis labels as an object array: Plotly validates it in one step instead of item by item."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def layout(title: str, height: int, **more) -> dict:
    """Common layout, as a dict: building a figure in one call skips Plotly's per-update validation
    (a 512-token heatmap builds in ~10 ms instead of ~50 ms)."""
    return dict(title=dict(text=title, font=dict(size=14)), height=height,
                margin=dict(l=10, r=10, t=40, b=10), uirevision="keep", **more)


def strip_window(num_tokens: int, focus: int, max_tokens: int = STRIP_MAX_TOKENS) -> Span:
    """At most max_tokens consecutive tokens, containing `focus` (centred where possible)."""
    if num_tokens <= max_tokens:
        return 0, num_tokens
    start = min(max(0, focus - max_tokens // 2), num_tokens - max_tokens)
    return start, start + max_tokens


def _strip_layout(widths: Sequence[int], row_chars: int) -> tuple[list[int], list[int]]:
    """(row, start column) of each token when they are written one after another and wrapped."""
    rows, starts, row, col = [], [], 0, 0
    for w in widths:
        if col > 0 and col + w > row_chars:
            row, col = row + 1, 0
        rows.append(row)
        starts.append(col)
        col += w
    return rows, starts


PROMPT_COLOR, ANSWER_COLOR = "#DCE6F2", "#D9F0D3"


def strip_title(t: int, window: Span, answer_start: int | None) -> str:
    """Says what the strip holds: the prompt and, for a chat turn, where the answer begins."""
    start, stop = window
    shown = f"tokens {start}–{stop - 1} of {t}" if window != (0, t) else f"{t} tokens"
    if answer_start is None or not 0 < answer_start < t:
        return f"{shown[0].upper()}{shown[1:]} · click a token to focus the views"
    return (f"<span style='color:#4C78A8'>■</span> prompt 0–{answer_start - 1} · "
            f"<span style='color:#54A24B'>■</span> answer {answer_start}–{t - 1} ({shown}) · click a token to focus")


def _strip_hover(p: int, text: str, answer_start: int | None) -> str:
    part = "" if answer_start is None else (" · answer" if p >= answer_start else " · prompt")
    hover = f"{p}{part}: {plotly_text(text, 40)}"
    if has_byte_pieces(text):
        hover += "<br>" + "<br>".join(textwrap.wrap(html.escape(BYTE_PIECE_NOTE, quote=False), 60))
    return hover


def token_strip(texts: Sequence[str], focus: int | None, answer_start: int | None = None,
                max_tokens: int = STRIP_MAX_TOKENS, row_chars: int = STRIP_ROW_CHARS,
                window: Span | None = None) -> go.Figure:
    """The prompt written out token by token, one box per token, wrapped like text; clicking a box
    selects the token (its point's customdata is the position). Long prompts show a window around
    the focused token, or `window` (a page the reader turned to, which may not hold the focus). For a chat turn the answer's tokens are green and a bar marks where the
    prompt ends; a token holding part of a character shows its byte pieces (<0xD7>), explained on hover.

    Boxes are horizontal bars (bars can be selected, heatmap cells cannot), each as wide as its label.
    """
    t = len(texts)
    start, stop = window if window is not None else strip_window(t, focus or 0, max_tokens)
    positions = list(range(start, stop))
    shown = [visible_whitespace(texts[p]) for p in positions]
    shown = [s if len(s) <= 16 else s[:15] + "…" for s in shown]
    widths = [max(2, len(s) + 1) for s in shown]
    rows, starts = _strip_layout(widths, row_chars)
    n_rows = max(rows) + 1 if rows else 1
    answer = answer_start if answer_start is not None and 0 < answer_start < t else None

    def color(p: int) -> str:
        if p == focus:
            return FOCUS_COLOR
        return ANSWER_COLOR if answer is not None and p >= answer else PROMPT_COLOR

    bar = go.Bar(
        orientation="h", x=f32(widths), base=f32(starts), y=np.asarray(rows, dtype=np.int32),
        customdata=np.asarray(positions, dtype=np.int32),
        text=labels([html.escape(s, quote=False) for s in shown]), textposition="inside", insidetextanchor="middle",
        constraintext="none", textangle=0, textfont=dict(size=12, color="#1f2933"),
        marker=dict(color=labels([color(p) for p in positions]), line=dict(width=1, color="#FFFFFF")),
        hovertext=labels([_strip_hover(p, texts[p], answer) for p in positions]), hoverinfo="text", showlegend=False)
    shapes = []
    if answer is not None and start <= answer < stop:
        i = answer - start
        shapes.append(dict(type="line", x0=starts[i], x1=starts[i], y0=rows[i] - 0.5, y1=rows[i] + 0.5,
                           line=dict(color="#1f2933", width=3)))
    lay = layout(strip_title(t, (start, stop), answer), 56 + 26 * n_rows, shapes=shapes,
                 xaxis=dict(visible=False, range=[0, max(row_chars, max(s + w for s, w in zip(starts, widths)))],
                            fixedrange=True),
                 yaxis=dict(visible=False, autorange="reversed", fixedrange=True),
                 dragmode=False, clickmode="event+select", bargap=0.12)
    lay["margin"] = dict(l=10, r=10, t=36, b=4)
    return go.Figure(data=[bar], layout=lay)


__all__ = ["CLICK_MARKER", "FOCUS_COLOR", "cell_of", "f32", "labels", "layout", "plotly_label", "plotly_text",
           "span_label", "span_labels", "strip_window", "token_strip"]
