"""The large attention map as plain HTML: the same picture, labels and focus box as its figure."""
from __future__ import annotations

import re

from explorer.views.figures.attention import EXACT_CELLS, attention_heatmap
from explorer.views.figures.map_html import MAP_CLASS, image_map_html, is_image_map
from tests.views import random_attention_view


def _view(n: int):
    return random_attention_view(n, layer=5, head=2, seed=1)


def test_only_maps_sent_as_an_image_are_drawn_as_html():
    texts = [f"w{i}" for i in range(EXACT_CELLS + 1)]
    assert is_image_map(attention_heatmap(_view(EXACT_CELLS + 1), texts))
    assert not is_image_map(attention_heatmap(_view(EXACT_CELLS), texts[:EXACT_CELLS]))


def test_the_html_carries_the_figures_picture_title_every_label_and_colour_key():
    n = 300
    fig = attention_heatmap(_view(n), [f"w{i}" for i in range(n)], focus=120)
    markup = image_map_html(fig, "a note")
    assert markup.startswith(f'<div class="{MAP_CLASS}"') and markup.endswith("</div>")
    assert fig.data[0].source in markup and fig.layout.images[0].source in markup
    assert f'data-title="{fig.layout.title.text}"' in markup
    for label in list(fig.layout.yaxis.ticktext) + list(fig.layout.xaxis.ticktext):
        assert f">{label}</span>" in markup
    for note in fig.layout.annotations:
        assert f">{note.text}<" in markup
    assert 'title="a note"' in markup


def test_the_focus_box_sits_on_the_focused_row():
    n, focus = 400, 300
    fig = attention_heatmap(_view(n), [f"w{i}" for i in range(n)], focus=focus)
    markup = image_map_html(fig)
    m = fig.layout.margin
    plot_h = fig.layout.height - m.t - m.b
    top = _focus_top(markup)
    assert abs(top - (m.t + plot_h * focus / n)) < 1.0                    # row `focus` of n, counted from the top
    lower = attention_heatmap(_view(n), [f"w{i}" for i in range(n)], focus=focus + 50)
    assert _focus_top(image_map_html(lower)) > top


def _focus_top(markup: str) -> float:
    """The focus box's top edge in px (the one element with a 2 px border)."""
    return float(re.search(r"top:([\d.]+)px;height:[\d.]+px;border:2px solid", markup).group(1))


def _markup_of(first: str, rest: str) -> str:
    """The HTML map of a prompt whose first token is `first` and the others `rest` with their index."""
    n = EXACT_CELLS + 10
    texts = [first] + [rest.format(i) for i in range(1, n)]
    return image_map_html(attention_heatmap(_view(n), texts, focus=0))


def test_token_text_cannot_inject_markup():
    markup = _markup_of("<script>alert(1)</script>", "<b>w{}</b>")
    assert "<script" not in markup and "<b>" not in markup
    assert "&lt;script&gt;" in markup


def test_hidden_characters_in_token_text_are_shown_not_applied():
    markup = _markup_of("\u202eexe.live\u202c", "w\u200b{}")
    assert "\u202e" not in markup and "\u200b" not in markup
    assert "U+202E" in markup
