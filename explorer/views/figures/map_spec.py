"""One description of a large attention map, and its Plotly rendering; map_html renders it as HTML.

Why a description: the page draws a large map as plain HTML (see map_html) and the download gives
the interactive Plotly figure. Both are built from one MapSpec (picture, axes, ticks, colour key,
focus box), so neither is read back from the other and a change to the map changes both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import plotly.graph_objects as go

from explorer.views.figures.internals import FOCUS_COLOR, layout

# Numeric axes whose labels Plotly need not measure. By default Plotly measures every tick label of a
# numeric axis twice per draw: to hide labels past the edge ("ticklabeloverflow") and to grow the
# margins ("automargin", which then draws the whole figure a second time). In software-rendered
# Chromium that was half of a 512-token map's draw (236 → 70 ms); the margins come from label_margins.
FIXED_AXIS = dict(showgrid=False, zeroline=False, ticklabeloverflow="allow", automargin=False)
KEY_X = 1.02             # the colour key's left edge, as a share of the plot's width from its left
KEY_SHARE = 0.025        # its width, as a share of the plot's width
KEY_TICK_SHIFT_PX = 16   # its tick labels, right of its left edge
KEY_TITLE_SHIFT_PX = 4   # its title, above its top


@dataclass(frozen=True)
class Axis:
    """One axis of the map, counted in cells (0 = first row at the top, or first column at the left)."""
    title: str
    cells: int
    ticks: tuple[tuple[int, str], ...]    # (cell, label); labels are HTML-escaped already (plotly_text)


@dataclass(frozen=True)
class ColourKey:
    """A vertical colour bar beside the map, as tall as the plot."""
    ramp: str                             # PNG data URI of the scale, top = the largest value
    title: str
    ticks: tuple[tuple[float, str], ...]  # (height as a share of the key's, 0 = bottom; label)


@dataclass(frozen=True)
class Margin:
    """Pixels around the plot area, fixed (nothing is measured in the browser)."""
    left: int
    right: int
    top: int
    bottom: int


@dataclass(frozen=True)
class MapSpec:
    """Everything both renderings of a large map draw. The plot area is `height` minus the top and
    bottom margins tall and the container's width minus the side margins wide; cell (r, c) fills
    row r of `rows.cells` and column c of `cols.cells` of it."""
    title: str
    image: str                            # PNG data URI, one pixel per cell
    hover: str                            # Plotly hover template over the picture
    rows: Axis                            # query cells, top to bottom
    cols: Axis                            # key cells, left to right
    height: int
    margin: Margin
    key: ColourKey
    tokens: int                           # tokens of the capture (the cells may pool several)
    focus: int | None = None              # the outlined row, if any
    focus_color: str = FOCUS_COLOR

    def with_focus(self, row: int | None) -> MapSpec:
        return replace(self, focus=row if row is not None and 0 <= row < self.rows.cells else None)


class MapFigure(go.Figure):
    """The Plotly figure of a MapSpec, keeping the spec, so the HTML rendering needs no read-back."""

    _map_spec: MapSpec | None = None

    @property
    def spec(self) -> MapSpec | None:
        return self._map_spec


def _focus_shapes(spec: MapSpec) -> list[dict]:
    if spec.focus is None:
        return []
    return [dict(type="rect", x0=-0.5, x1=spec.cols.cells - 0.5, y0=spec.focus - 0.5, y1=spec.focus + 0.5,
                 line=dict(color=spec.focus_color, width=2))]


def _key_layout(key: ColourKey) -> tuple[list[dict], list[dict]]:
    """The colour key as a layout image and annotations. Why not Plotly's colour bar: it needs a trace to
    hang on, and it measures its labels and pushes the margins on every draw (a third of a 512-token
    map's draw in Chromium)."""
    image = dict(source=key.ramp, xref="paper", yref="paper", x=KEY_X, y=1.0, sizex=KEY_SHARE, sizey=1.0,
                 sizing="stretch", xanchor="left", yanchor="top", layer="above")
    tick = dict(xref="paper", yref="paper", x=KEY_X, xanchor="left", xshift=KEY_TICK_SHIFT_PX, showarrow=False,
                font=dict(size=10))
    notes = [dict(tick, y=share, text=label) for share, label in key.ticks]
    notes.append(dict(xref="paper", yref="paper", x=KEY_X, y=1.0, xanchor="left", yanchor="bottom",
                      yshift=KEY_TITLE_SHIFT_PX, showarrow=False, text=key.title, font=dict(size=12)))
    return [image], notes


def map_figure(spec: MapSpec) -> MapFigure:
    """The map as a Plotly figure: one image trace on numeric axes whose units are cells."""
    rows, cols = spec.rows, spec.cols
    yaxis = dict(title=dict(text=rows.title), tickfont=dict(size=10), range=[rows.cells - 0.5, -0.5],
                 tickvals=[c for c, _ in rows.ticks], ticktext=[t for _, t in rows.ticks], **FIXED_AXIS)
    xaxis = dict(title=dict(text=cols.title), tickangle=-60, tickfont=dict(size=10), range=[-0.5, cols.cells - 0.5],
                 tickvals=[c for c, _ in cols.ticks], ticktext=[t for _, t in cols.ticks], **FIXED_AXIS)
    lay = layout(spec.title, spec.height, meta=dict(cols=cols.cells, rows=rows.cells, tokens=spec.tokens),
                 yaxis=yaxis, xaxis=xaxis)
    m = spec.margin
    lay["margin"] = dict(l=m.left, r=m.right, t=m.top, b=m.bottom)
    lay["images"], lay["annotations"] = _key_layout(spec.key)
    lay["shapes"] = _focus_shapes(spec)
    fig = MapFigure(data=[go.Image(source=spec.image, x0=0, dx=1, y0=0, dy=1, hovertemplate=spec.hover)], layout=lay)
    fig._map_spec = spec
    return fig


def refocus(fig: MapFigure, row: int | None) -> MapFigure:
    """Move the focus box to `row`, in place, in the figure and in its spec alike."""
    fig._map_spec = fig.spec.with_focus(row)
    fig.layout.shapes = _focus_shapes(fig.spec)
    return fig


def spec_of(fig: go.Figure) -> MapSpec | None:
    """The description a map figure was built from; None for any other figure."""
    return fig.spec if isinstance(fig, MapFigure) else None


__all__ = ["FIXED_AXIS", "Axis", "ColourKey", "MapFigure", "MapSpec", "Margin", "map_figure", "refocus", "spec_of"]
