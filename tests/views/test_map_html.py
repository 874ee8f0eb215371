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
    top = float(re.search(r"top:([\d.]+)px;height:([\d.]+)px;border:2px solid", markup).group(1))
    assert abs(top - (m.t + plot_h * focus / n)) < 1.0                    # row `focus` of n, counted from the top
    lower = attention_heatmap(_view(n), [f"w{i}" for i in range(n)], focus=focus + 50)
    top_lower = float(re.search(r"top:([\d.]+)px;height:[\d.]+px;border:2px solid", image_map_html(lower)).group(1))
    assert top_lower > top


def test_token_text_cannot_inject_markup():
    n = EXACT_CELLS + 10
    texts = ["<script>alert(1)</script>"] + [f"<b>w{i}</b>" for i in range(1, n)]
    markup = image_map_html(attention_heatmap(_view(n), texts, focus=0))
    assert "<script" not in markup and "<b>" not in markup
    assert "&lt;script&gt;" in markup


def test_hidden_characters_in_token_text_are_shown_not_applied():
    n = EXACT_CELLS + 10
    texts = ["\u202eexe.live\u202c"] + [f"w\u200b{i}" for i in range(1, n)]
    markup = image_map_html(attention_heatmap(_view(n), texts, focus=0))
    assert "\u202e" not in markup and "\u200b" not in markup
    assert "U+202E" in markup
