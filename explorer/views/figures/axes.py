"""Axis helpers shared by the figures: a log axis with a few clean ticks.

Why: Plotly's own log ticks label every 2, 3, 4 … 9 in a decade when the range is narrow, and the
labels run together (the Compare KL chart, the contributions chart). Here a log axis gets decades
only, plus 2 and 5 when fewer than three decades are in range, and no minor grid.
"""
from __future__ import annotations

import math
from typing import Iterable


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
    """A layout axis dict: type log, clean ticks for `values`, no minor ticks or grid."""
    ticks = log_ticks(values)
    return dict(type="log", tickmode="array", tickvals=ticks, ticktext=[tick_label(t) for t in ticks],
                minor=dict(ticks="", showgrid=False), **more)


__all__ = ["log_axis", "log_ticks", "tick_label"]
