"""Axis and title helpers shared by the figures: a log axis with a few clean ticks, every category
labelled where the labels fit, and titles kept clear of Plotly's toolbar.

Why: Plotly's own log ticks label every 2, 3, 4 … 9 in a decade when the range is narrow, and the
labels run together (the Compare KL chart, the contributions chart). Here a log axis gets decades
only, plus 2 and 5 when fewer than three decades are in range, and no minor grid.
"""
from __future__ import annotations

import math
from collections.abc import Iterable


def log_ticks(values: Iterable[float]) -> list[float]:
    """Tick positions (data units) for a log axis covering the positive finite `values`."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if not vals:
        return [1.0]
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    hi = max(hi, lo + 1)
    mantissas = (1, 2, 5) if hi - lo < 3 else (1,)
    step = max(1, math.ceil((hi - lo) / 8))            # at most ~9 decade labels
    return [m * 10.0 ** e for e in range(lo, hi + 1, step) for m in mantissas
            if min(vals) / 2 <= m * 10.0 ** e <= max(vals) * 2] or [10.0 ** lo]


def tick_label(v: float) -> str:
    """1e-05, 0.002, 0.5, 20, 3000: short, without trailing zeros."""
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e") if (v < 1e-3 or v >= 1e4) else f"{v:g}"


def log_axis(values: Iterable[float], **more) -> dict:
    """A layout axis dict: type log, clean ticks for `values`, no minor ticks or grid.

    Data that spans less than the gap between two ticks (KL from 0.021 to 0.045: ticks 0.02 and
    0.05) would leave Plotly's autorange with no tick on the axis at all; the range then reaches
    out to the ticks around the data (at most 2× beyond it, see log_ticks)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) > 0]
    ticks = log_ticks(values)
    axis = dict(type="log", tickmode="array", tickvals=ticks, ticktext=[tick_label(t) for t in ticks],
                minor=dict(ticks="", showgrid=False), **more)
    if values and "range" not in more and sum(min(values) <= t <= max(values) for t in ticks) < 2:
        lo, hi = min(ticks + [min(values)]), max(ticks + [max(values)])
        pad = 0.03 * max(math.log10(hi / lo), 0.1)                     # room for the end ticks' labels
        axis["range"] = [math.log10(lo) - pad, math.log10(hi) + pad]
    return axis


def category_ticks(categories, room_px: float | None = None, label_px: float = 13) -> dict:
    """Axis keys that label every category when `room_px` holds them `label_px` apart (Plotly's own
    category ticks drop every second label well before they would touch), and otherwise every k-th,
    deliberately and evenly."""
    cats = list(categories)
    step = 1 if room_px is None else max(1, math.ceil(len(cats) * label_px / max(room_px, label_px)))
    shown = cats[::step]
    return dict(tickmode="array", tickvals=shown, ticktext=shown)


def integer_ticks(lo: int, hi: int, most: int = 10) -> dict:
    """Axis keys for whole-number data: ticks only on integers (never 1.5), at most `most` of them."""
    step = max(1, math.ceil((hi - lo + 1) / most))
    return dict(tickmode="array", tickvals=list(range(lo, hi + 1, step)))


TOOLBAR_PX = 34          # Plotly's toolbar (modebar): 2 px from the top, 24–28 px of buttons
TITLE_LINE_PX = 20       # one line of a 14 px title
SUPER_LINE_PX = 14       # one <sup> line under it


def title_below_toolbar(lay: dict, gap_px: int = 10) -> dict:
    """Place the title (if any) under the toolbar's strip and grow the top margin to hold it, in place.

    Why: the toolbar sits over the top right of every chart on hover and at rest; a title in the
    margin's top 30 px runs under it. Here the title's top is TOOLBAR_PX down and the plot starts
    below the title's last line.
    """
    title = lay.get("title")
    text = (title.get("text") if isinstance(title, dict) else title) or ""
    margin = dict(lay.get("margin") or {})
    if text:
        lines = text.split("<br>")
        height = TITLE_LINE_PX + sum(SUPER_LINE_PX if "<sup>" in line else TITLE_LINE_PX for line in lines[1:])
        lay["title"] = dict(title if isinstance(title, dict) else dict(text=text), yref="container", y=1,
                            yanchor="top", pad=dict(t=TOOLBAR_PX))
        margin["t"] = max(int(margin.get("t", 0)), TOOLBAR_PX + height + gap_px)
    else:
        margin["t"] = max(int(margin.get("t", 0)), TOOLBAR_PX)
    lay["margin"] = margin
    return lay


__all__ = ["TOOLBAR_PX", "category_ticks", "integer_ticks", "log_axis", "log_ticks", "tick_label",
           "title_below_toolbar"]
