"""A large attention map drawn as plain HTML: its PNG, axis labels, colour key and focus row.

Why not the Plotly chart: above EXACT_CELLS a side a cell is one or two screen pixels, so hover
and zoom no longer show single cells, yet a remounted Plotly chart costs Streamlit's frontend two
draws (before and after it knows its width) on every layer or head switch: half of the repaint at
512 tokens. An <img> with absolutely placed labels only decodes a ~100 kB PNG. The figure stays
the source: this renders the same image trace, ticks, margins, colour key and focus box, and the
figure itself is still what the download gives (interactive, with zoom).
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

MAP_CLASS = "attention-map-image"


def _frac(value: float, lo: float, hi: float) -> float:
    """Where `value` lies on an axis running from lo to hi, as a share of its length (0 at lo)."""
    return (value - lo) / (hi - lo) if hi != lo else 0.0


def _ticks(axis) -> list[tuple[float, str]]:
    """(value, label) pairs of an array-ticked axis; labels are already HTML-escaped by the builder."""
    return list(zip(axis.tickvals or (), axis.ticktext or ()))


def is_image_map(fig: go.Figure) -> bool:
    """True for a map the builder sent as one PNG image trace (see attention_heatmap)."""
    return len(fig.data) == 1 and fig.data[0].type == "image"


def image_map_html(fig: go.Figure, note: str = "") -> str:
    """The map as one positioned <div>: width follows the container, height is the figure's."""
    lay = fig.layout
    m = lay.margin
    left, right, top, bottom = int(m.l), int(m.r), int(m.t), int(m.b)
    height = int(lay.height)
    plot_h = height - top - bottom
    plot_w = f"(100% - {left + right}px)"
    x_lo, x_hi = lay.xaxis.range                                   # (-0.5, n_k - 0.5)
    y_lo, y_hi = lay.yaxis.range                                   # (n_q - 0.5, -0.5): row 0 at the top
    title = html.escape(html.unescape(lay.title.text or ""))
    tokens = int((lay.meta or {}).get("tokens", 0))
    parts = [f'<div class="{MAP_CLASS}" data-title="{title}" data-tokens="{tokens}" '
             f'style="position:relative;height:{height}px;font:10px sans-serif;color:#444;overflow:hidden">',
             f'<div style="position:absolute;left:{left}px;top:10px;font-size:14px;color:#222">{title}</div>',
             f'<img alt="attention map" src="{fig.data[0].source}" title="{html.escape(note)}" '
             f'style="position:absolute;left:{left}px;top:{top}px;width:calc{plot_w};height:{plot_h}px;'
             'image-rendering:pixelated">']
    for value, label in _ticks(lay.yaxis):                         # query labels, right-aligned left of the plot
        y = top + plot_h * _frac(value, y_hi, y_lo)
        parts.append(f'<span class="query-label" style="position:absolute;right:calc(100% - {left - 4}px);'
                     f'top:{y:.1f}px;transform:translateY(-50%);white-space:nowrap">{label}</span>')
    for value, label in _ticks(lay.xaxis):                         # key labels, hanging at -60° below the plot
        x = _frac(value, x_lo, x_hi)
        parts.append(f'<span class="key-label" style="position:absolute;top:{top + plot_h + 4}px;'
                     f'left:calc({left}px + {plot_w} * {x:.5f});transform:translateX(-100%) rotate(-60deg);'
                     f'transform-origin:100% 50%;white-space:nowrap">{label}</span>')
    parts.append(f'<div style="position:absolute;left:2px;top:{top + plot_h / 2:.0f}px;transform:rotate(-90deg) '
                 f'translateX(-50%);transform-origin:0 0;font-size:12px">'
                 f'{html.escape(lay.yaxis.title.text or "")}</div>')
    parts.append(f'<div style="position:absolute;left:calc({left}px + {plot_w} / 2);bottom:2px;'
                 f'transform:translateX(-50%);font-size:12px">{html.escape(lay.xaxis.title.text or "")}</div>')
    for shape in lay.shapes or ():                                 # the focus row (a box across the map)
        y0, y1 = sorted((_frac(shape.y0, y_hi, y_lo), _frac(shape.y1, y_hi, y_lo)))
        parts.append(f'<div style="position:absolute;box-sizing:border-box;left:{left}px;width:calc{plot_w};'
                     f'top:{top + plot_h * y0:.1f}px;height:{max(3.0, plot_h * (y1 - y0)):.1f}px;'
                     f'border:2px solid {shape.line.color};pointer-events:none"></div>')
    key_left = f"calc(100% - {right}px + 8px)"
    for image in lay.images or ():                                 # the colour key (a 1 × 128 ramp)
        parts.append(f'<img alt="colour key" src="{image.source}" style="position:absolute;left:{key_left};'
                     f'top:{top}px;width:12px;height:{plot_h}px">')
    for tick in lay.annotations or ():                             # its ticks (y in paper units) and its title
        if tick.yanchor == "bottom":
            parts.append(f'<div style="position:absolute;left:{key_left};top:{top - 16}px;font-size:12px">'
                         f'{html.escape(tick.text)}</div>')
        else:
            y = top + plot_h * (1.0 - float(tick.y))
            parts.append(f'<span style="position:absolute;left:calc(100% - {right}px + 24px);top:{y:.1f}px;'
                         f'transform:translateY(-50%)">{html.escape(tick.text)}</span>')
    parts.append("</div>")
    return "".join(parts)


__all__ = ["MAP_CLASS", "image_map_html", "is_image_map"]
