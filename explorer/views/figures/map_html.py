"""A large attention map drawn as plain HTML: its PNG, axis labels, colour key and focus row.

Why not the Plotly chart: above EXACT_CELLS a side a cell is one or two screen pixels, so hover
and zoom no longer show single cells, yet a remounted Plotly chart costs Streamlit's frontend two
draws (before and after it knows its width) on every layer or head switch: half of the repaint at
512 tokens. An <img> with absolutely placed labels only decodes a ~100 kB PNG. This and the Plotly
figure (still what the download gives, interactive, with zoom) are two renderings of one MapSpec
(map_spec.py): the same picture, ticks, margins, colour key and focus box, nothing read back.
"""
from __future__ import annotations

import html

import plotly.graph_objects as go

from explorer.views.figures.map_spec import KEY_TICK_SHIFT_PX, KEY_TITLE_SHIFT_PX, MapSpec, spec_of

MAP_CLASS = "attention-map-image"
KEY_WIDTH_PX = 12
KEY_GAP_PX = 8           # between the plot's right edge and the key (Plotly: KEY_X of the plot's width)


def row_share(cell: float, cells: int) -> float:
    """Where the centre of row (or column) `cell` lies on its axis, as a share of its length from the
    top (or left): the axis runs from -0.5 to cells - 0.5, as in the Plotly figure."""
    return (cell + 0.5) / cells if cells else 0.0


def is_image_map(fig: go.Figure) -> bool:
    """True for a large map built from a MapSpec (see attention_heatmap), which has an HTML rendering."""
    return spec_of(fig) is not None


def image_map_html(fig: go.Figure, note: str = "") -> str:
    """The map figure's HTML rendering, built from the spec the figure was built from."""
    spec = spec_of(fig)
    if spec is None:
        raise ValueError("Only a large attention map (built from a MapSpec) has an HTML rendering.")
    return map_html(spec, note)


def map_html(spec: MapSpec, note: str = "") -> str:
    """The map as one positioned <div>: width follows the container, height is the spec's."""
    m = spec.margin
    left, right, top, bottom = m.left, m.right, m.top, m.bottom
    plot_h = spec.height - top - bottom
    plot_w = f"(100% - {left + right}px)"
    title = html.escape(html.unescape(spec.title))
    parts = [f'<div class="{MAP_CLASS}" data-title="{title}" data-tokens="{spec.tokens}" '
             f'style="position:relative;height:{spec.height}px;font:10px sans-serif;color:#444;overflow:hidden">',
             f'<div style="position:absolute;left:{left}px;top:10px;font-size:14px;color:#222">{title}</div>',
             f'<img alt="attention map" src="{spec.image}" title="{html.escape(note)}" '
             f'style="position:absolute;left:{left}px;top:{top}px;width:calc{plot_w};height:{plot_h}px;'
             'image-rendering:pixelated">']
    for cell, label in spec.rows.ticks:                            # query labels, right-aligned left of the plot
        y = top + plot_h * row_share(cell, spec.rows.cells)
        parts.append(f'<span class="query-label" style="position:absolute;right:calc(100% - {left - 4}px);'
                     f'top:{y:.1f}px;transform:translateY(-50%);white-space:nowrap">{label}</span>')
    for cell, label in spec.cols.ticks:                            # key labels, hanging at -60° below the plot
        x = row_share(cell, spec.cols.cells)
        parts.append(f'<span class="key-label" style="position:absolute;top:{top + plot_h + 4}px;'
                     f'left:calc({left}px + {plot_w} * {x:.5f});transform:translateX(-100%) rotate(-60deg);'
                     f'transform-origin:100% 50%;white-space:nowrap">{label}</span>')
    parts.append(f'<div class="axis-title" style="position:absolute;left:2px;top:{top + plot_h / 2:.0f}px;'
                 f'transform:rotate(-90deg) translateX(-50%);transform-origin:0 0;font-size:12px">'
                 f'{html.escape(spec.rows.title)}</div>')
    parts.append(f'<div class="axis-title" style="position:absolute;left:calc({left}px + {plot_w} / 2);bottom:2px;'
                 f'transform:translateX(-50%);font-size:12px">{html.escape(spec.cols.title)}</div>')
    if spec.focus is not None:                                     # the focus row (a box across the map)
        y0 = top + plot_h * spec.focus / spec.rows.cells
        parts.append(f'<div class="focus-box" style="position:absolute;box-sizing:border-box;left:{left}px;'
                     f'width:calc{plot_w};top:{y0:.1f}px;height:{max(3.0, plot_h / spec.rows.cells):.1f}px;'
                     f'border:2px solid {spec.focus_color};pointer-events:none"></div>')
    key_left = f"calc(100% - {right}px + {KEY_GAP_PX}px)"
    key = spec.key
    parts.append(f'<img alt="colour key" src="{key.ramp}" style="position:absolute;left:{key_left};'
                 f'top:{top}px;width:{KEY_WIDTH_PX}px;height:{plot_h}px">')
    parts.append(f'<div class="key-title" style="position:absolute;left:{key_left};top:{top - 12 - KEY_TITLE_SHIFT_PX}px;'
                 f'font-size:12px">{html.escape(key.title)}</div>')
    for share, label in key.ticks:                                 # share of the key's height from its bottom
        y = top + plot_h * (1.0 - share)
        parts.append(f'<span class="key-tick" style="position:absolute;'
                     f'left:calc(100% - {right}px + {KEY_GAP_PX + KEY_TICK_SHIFT_PX}px);top:{y:.1f}px;'
                     f'transform:translateY(-50%)">{html.escape(label)}</span>')
    parts.append("</div>")
    return "".join(parts)


__all__ = ["MAP_CLASS", "image_map_html", "is_image_map", "map_html", "row_share"]
