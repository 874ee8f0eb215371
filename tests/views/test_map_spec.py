"""One MapSpec, two renderings: the Plotly figure and the HTML of a large map agree on every label and
on where the picture, the ticks, the focus box and the colour key lie."""
from __future__ import annotations

import base64
import re
import struct
from dataclasses import replace

import pytest

from explorer.views.figures.attention import attention_heatmap, focus_row
from explorer.views.figures.map_html import image_map_html, map_html
from explorer.views.figures.map_spec import map_figure, spec_of
from tests.views import random_attention_view

N, FOCUS = 300, 120


@pytest.fixture(scope="module")
def spec():
    fig = attention_heatmap(random_attention_view(N, layer=4, head=1, seed=3), [f"w{i}" for i in range(N)], FOCUS)
    return spec_of(fig)


def _spans(markup: str, cls: str) -> list[tuple[str, str]]:
    """(style, text) of every element of class `cls`."""
    return re.findall(rf'<(?:span|div) class="{cls}" style="([^"]*)">([^<]*)</(?:span|div)>', markup)


def _px(style: str, prop: str) -> float:
    return float(re.search(rf"(?:^|;){prop}:([\d.]+)px", style).group(1))


def _plot(fig) -> tuple[float, float]:
    """(top, height) of the figure's plot area in px."""
    m = fig.layout.margin
    return m.t, fig.layout.height - m.t - m.b


def _y_px(fig, value: float) -> float:
    """Pixel row of an axis value on the figure (y runs down: range = [bottom, top])."""
    top, plot_h = _plot(fig)
    bottom_v, top_v = fig.layout.yaxis.range
    return top + plot_h * (value - top_v) / (bottom_v - top_v)


def test_both_carry_the_same_title_picture_and_axis_titles(spec):
    fig, markup = map_figure(spec), map_html(spec)
    assert f'data-title="{fig.layout.title.text}"' in markup
    assert f'src="{fig.data[0].source}"' in markup and f'src="{fig.layout.images[0].source}"' in markup
    titles = [text for _, text in _spans(markup, "axis-title")]
    assert titles == [fig.layout.yaxis.title.text, fig.layout.xaxis.title.text]
    png = base64.b64decode(fig.data[0].source.split(",", 1)[1])
    width, height = struct.unpack(">II", png[16:24])                    # one pixel per cell, both ways
    assert (height, width) == (fig.layout.meta["rows"], fig.layout.meta["cols"]) == (spec.rows.cells, spec.cols.cells)
    assert list(fig.layout.yaxis.range) == [spec.rows.cells - 0.5, -0.5]
    assert list(fig.layout.xaxis.range) == [-0.5, spec.cols.cells - 0.5]


def test_query_labels_are_the_same_and_sit_on_the_same_rows(spec):
    fig, markup = map_figure(spec), map_html(spec)
    html_rows = _spans(markup, "query-label")
    assert [text for _, text in html_rows] == list(fig.layout.yaxis.ticktext)
    for (style, _), value in zip(html_rows, fig.layout.yaxis.tickvals, strict=True):
        assert _px(style, "top") == pytest.approx(_y_px(fig, value), abs=0.06)


def test_key_labels_are_the_same_and_sit_on_the_same_columns(spec):
    fig, markup = map_figure(spec), map_html(spec)
    html_cols = _spans(markup, "key-label")
    assert [text for _, text in html_cols] == list(fig.layout.xaxis.ticktext)
    x0, x1 = fig.layout.xaxis.range
    for (style, _), value in zip(html_cols, fig.layout.xaxis.tickvals, strict=True):
        share = float(re.search(r"\* ([\d.]+)\)", style).group(1))       # share of the plot's width
        assert share == pytest.approx((value - x0) / (x1 - x0), abs=1e-5)


def test_the_focus_box_covers_the_same_row_in_both_and_moves_in_both(spec):
    fig = map_figure(spec)
    for row in (FOCUS, 7, None):
        focus_row(fig, [(i, i + 1) for i in range(N)], row)              # the page's token switch
        markup = image_map_html(fig)
        boxes = re.findall(r'class="focus-box" style="([^"]*)"', markup)
        if row is None:
            assert not boxes and not fig.layout.shapes
            continue
        (shape,), (style,) = fig.layout.shapes, boxes
        assert _px(style, "top") == pytest.approx(_y_px(fig, shape.y0), abs=0.06)
        row_px = _y_px(fig, shape.y1) - _y_px(fig, shape.y0)             # the HTML box is at least 3 px tall
        assert _px(style, "height") == pytest.approx(max(3.0, row_px), abs=0.06)
        assert shape.line.color in style and spec_of(fig).focus == row


def test_the_colour_key_has_the_same_ticks_and_title_at_the_same_heights(spec):
    fig, markup = map_figure(spec), map_html(spec)
    top, plot_h = _plot(fig)
    notes = list(fig.layout.annotations)
    ticks = _spans(markup, "key-tick")
    (title,) = _spans(markup, "key-title")
    assert sorted(n.text for n in notes) == sorted([t for _, t in ticks] + [title[1]])
    by_text = {n.text: n for n in notes}
    for style, text in ticks:
        assert _px(style, "top") == pytest.approx(top + plot_h * (1.0 - by_text[text].y), abs=0.06)
    key = fig.layout.images[0]
    assert (key.y, key.sizey, key.yanchor) == (1.0, 1.0, "top")          # as tall as the plot, in both
    assert re.search(rf'alt="colour key" [^>]*top:{top}px;[^>]*height:{plot_h}px', markup)


def test_a_change_to_the_spec_reaches_both_renderings(spec):
    changed = replace(spec, title="Another title", rows=replace(spec.rows, title="queries"))
    fig, markup = map_figure(changed), map_html(changed)
    assert fig.layout.title.text == "Another title" and 'data-title="Another title"' in markup
    assert fig.layout.yaxis.title.text == "queries" and ">queries</div>" in markup
