"""What the views show of text and how large maps travel: hidden characters shown, byte pieces for
split characters, the prompt/answer boundary, map height, log ticks, the attention map's payload."""
from __future__ import annotations

import json

import plotly.io as pio

from explorer.record.capture import capture
from explorer.record.token_text import show_bytes, token_text
from explorer.views.attention_data import AttentionView
from explorer.views.exports import tokens_table
from explorer.views.figures.attention import (
    EXACT_CELLS,
    MAP_CHART_PX,
    MAP_MAX_PX,
    ROW_PX,
    SLANT_PX,
    attention_heatmap,
    label_step,
    map_height,
    nice_ticks,
    thinned_title,
    tick_cells,
    token_attention_figure,
)
from explorer.views.figures.axes import log_ticks
from explorer.views.figures.internals import plotly_text, token_strip
from explorer.views.readout import Readout
from explorer.views.teaching import render
from explorer.views.text import show_hidden, visible_whitespace
from tests.tiny_models import tiny_model
from tests.views import random_attention_view

RLO = "\u202e"      # right-to-left override
PDF = "\u202c"      # pop directional formatting
ZWSP = "\u200b"


def payload(fig) -> str:
    return pio.to_json(fig.to_dict(), validate=False)


# ---- hidden characters ---------------------------------------------------------------------------

def test_bidi_overrides_and_zero_width_characters_are_shown_not_applied():
    assert show_hidden(f"{RLO}evil.exe{PDF}") == "⟨U+202E⟩evil.exe⟨U+202C⟩"
    assert show_hidden(f"pay{ZWSP}pal") == "pay⟨U+200B⟩pal"
    assert show_hidden("tag\U000e0041") == "tag⟨U+E0041⟩"                 # tag characters hide text
    assert show_hidden("a\u00a0b\ufeff") == "a⟨U+00A0⟩b⟨U+FEFF⟩"
    assert show_hidden("two words\nand a tab\t") == "two words\nand a tab\t"   # running text keeps its layout
    assert show_hidden("שלום, 日本語 ❤️") == "שלום, 日本語 ❤️"                  # visible scripts untouched
    assert visible_whitespace(f" {RLO}x\n") == "␣⟨U+202E⟩x↵"
    assert visible_whitespace("") == "∅"


def test_every_token_display_goes_through_the_one_visibility_function():
    cap = capture(tiny_model("llama"), None, list(range(5, 15)))
    cap.token_texts[2] = f"{RLO}exe"
    cap.token_texts[3] = f"a{ZWSP}b"
    r = Readout(cap)
    for fig in (token_strip(r.texts, 2), attention_heatmap(r.attention_view(0, 0), r.texts, 2),
                token_attention_figure(r.token_attention(5), r.texts)):
        text = payload(fig)
        assert RLO not in text and "\\u202e" not in text.lower() and ZWSP not in text
        assert "U+202E" in text and "U+200B" in text
    table = tokens_table(cap)
    assert table.loc[2, "text"] == "⟨U+202E⟩exe" and table.loc[3, "text"] == "a⟨U+200B⟩b"
    assert render("{first}", {"first": f"{RLO}x"}) == "⟨U\\+202E⟩x"          # shown (Markdown-escaped "+")
    assert plotly_text(f"{RLO}ab") == "⟨U+202E⟩ab"


# ---- byte pieces ---------------------------------------------------------------------------------

def test_a_character_split_across_tokens_shows_its_byte_pieces():
    assert show_bytes("ח".encode()) == "ח"
    assert show_bytes(b" \xd7") == " <0xD7>"
    assert show_bytes(b"\x97ab") == "<0x97>ab"

    class ByteLevel:
        """A GPT-2 style tokenizer for two tokens: the lead and trail bytes of ח (D7 97)."""
        pieces = {1: "×", 2: "Ĺ", 3: "Ġthe"}          # byte-level alphabet: D7 → ×, 97 → Ĺ, space → Ġ

        def convert_ids_to_tokens(self, i):
            return self.pieces[i]

        def decode(self, ids):
            return {1: "\ufffd", 2: "\ufffd", 3: " the"}[ids[0]]

    tok = ByteLevel()
    assert [token_text(tok, i) for i in (1, 2, 3)] == ["<0xD7>", "<0x97>", " the"]


def test_byte_pieces_carry_a_tooltip_in_the_token_strip():
    fig = token_strip(["a", "<0xD7>", "<0x97>"], 0)
    hover = list(fig.data[0].hovertext)
    assert "byte of a character" in hover[1] and "byte of a character" not in hover[0]


# ---- token strip: prompt and answer --------------------------------------------------------------

def test_token_strip_marks_where_the_prompt_ends_and_the_answer_begins():
    texts = [f"t{i}" for i in range(12)]
    fig = token_strip(texts, 11, answer_start=8)
    title = fig.layout.title.text
    assert "prompt 0–7" in title and "answer 8–11" in title and "Prompt (" not in title
    colors = list(fig.data[0].marker.color)
    assert colors[7] != colors[8] and colors[8] == colors[10]         # answer tokens share their own colour
    line = fig.layout.shapes[0]
    assert line.type == "line" and line.x0 == fig.data[0].base[8]      # a bar before the first answer token
    plain = token_strip(texts, 3)
    assert plain.layout.title.text.startswith("12 tokens") and not plain.layout.shapes


# ---- attention map: height, labels, payload ------------------------------------------------------

def _view(n: int) -> AttentionView:
    return random_attention_view(n)


def _rows_room(fig) -> float:
    return fig.layout.height - fig.layout.margin.t - fig.layout.margin.b


def test_map_height_grows_with_the_tokens_until_a_cap_and_labels_never_overlap():
    texts = [f"w{i}" for i in range(512)]
    heights = {n: attention_heatmap(_view(n), texts[:n]).layout.height for n in (8, 21, 40, 60, 142, 512)}
    assert heights[21] >= ROW_PX * 21 and heights[40] > heights[21] and heights[60] > heights[40]
    assert heights[142] == heights[512] == MAP_MAX_PX == map_height(10_000)
    for n in (21, 60, 142, 512):
        fig = attention_heatmap(_view(n), texts[:n], focus=n - 1)
        ticks = fig.layout.yaxis.tickvals
        assert len(ticks) * ROW_PX <= _rows_room(fig) + ROW_PX            # labels fit, one per ROW_PX
        assert (n <= 60) <= (len(ticks) == n)                              # up to 60 tokens: every row labelled
        cols = MAP_CHART_PX - fig.layout.margin.l - fig.layout.margin.r    # the plot's width at 1280 px
        assert len(fig.layout.xaxis.tickvals) * SLANT_PX <= cols + SLANT_PX
    assert tick_cells(142, 700, keep=141)[-1] == 141                       # the focus row is always labelled


def test_a_thinned_axis_says_so_and_a_map_can_grow_to_label_every_row():
    """87 tokens (the issue's chat turn): every 2nd row fits under the cap, and the title says so;
    every_label grows the map until each row has ROW_PX; a larger map keeps its cap."""
    texts = [f"tok{i}" for i in range(200)]
    fig = attention_heatmap(_view(87), texts[:87], focus=40)
    step = label_step(87, _rows_room(fig))
    assert step == 2 and fig.layout.yaxis.title.text == "query token · every 2nd labelled, hover names each"
    assert "every" in fig.layout.xaxis.title.text and "hover names each" in fig.layout.xaxis.title.text
    assert "query %{y}<br>key %{x}" in fig.data[0].hovertemplate and len(fig.data[0].y) == 87   # hover: each token
    tall = attention_heatmap(_view(87), texts[:87], focus=40, every_label=True)
    assert list(tall.layout.yaxis.tickvals) == list(tall.data[0].y) and tall.layout.yaxis.title.text == "query token"
    assert _rows_room(tall) >= 87 * ROW_PX
    small = attention_heatmap(_view(20), texts[:20])
    assert small.layout.yaxis.title.text == "query token" and small.layout.xaxis.title.text == "key token (attended to)"
    assert attention_heatmap(_view(200), texts, every_label=True).layout.height == MAP_MAX_PX
    assert thinned_title("key token", 3, hover=False) == "key token · every 3rd labelled"
    assert [thinned_title("k", n, hover=False).split()[3] for n in (11, 21, 22, 112)] == ["11th", "21st", "22nd", "112th"]
    big = attention_heatmap(_view(512), [f"w{i}" for i in range(512)])     # a picture on the page: no hover
    assert "labelled" in big.spec.rows.title and "hover" not in big.spec.rows.title + big.spec.cols.title


def test_attention_map_at_512_tokens_travels_as_a_compact_image():
    """1.46 MB of float32 JSON before. Bound: 400 kB = the uint8 levels themselves (512² bytes) in
    base64 with room to spare; a PNG of real attention (mostly near-zero, smooth rows) is far below it,
    and even incompressible noise (this test's random map) stays under it."""
    n = 512
    fig = attention_heatmap(_view(n), [f"w{i}" for i in range(n)], focus=100)
    spec = json.loads(payload(fig))
    assert spec["data"][0]["type"] == "image" and spec["data"][0]["source"].startswith("data:image/png;base64,")
    assert len(payload(fig)) < 400_000
    small = attention_heatmap(_view(EXACT_CELLS), [f"w{i}" for i in range(EXACT_CELLS)])
    assert small.data[0].type == "heatmap"                                # small maps keep hover values


def test_a_large_map_has_fixed_margins_that_fit_its_longest_labels():
    """Plotly measuring ~80 tick labels (overflow check, automargin and a second draw) was half of a
    512-token map's draw in Chromium; the margins are computed here instead, and must fit the labels."""
    n = 512
    short = attention_heatmap(_view(n), [f"w{i}" for i in range(n)])
    long = attention_heatmap(_view(n), [f"wordy&token{i}" for i in range(n)])
    for fig in (short, long):
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            assert axis.automargin is False and axis.ticklabeloverflow == "allow"
    assert long.layout.margin.l > short.layout.margin.l and long.layout.margin.b > short.layout.margin.b
    longest = len("511 wordy&token511")                                   # "&" is one glyph, not "&amp;"
    assert long.layout.margin.l >= 4.4 * longest + 20                     # 4.4 px a glyph measured at 10 px


def test_a_large_map_keys_its_colours_with_an_image_bar_and_round_ticks():
    """The colour bar is a layout image plus tick notes (Plotly's colour bar measured and pushed margins)."""
    z = _view(512).z
    fig = attention_heatmap(_view(512), [f"w{i}" for i in range(512)])
    assert len(fig.data) == 1 and fig.layout.images[0].source.startswith("data:image/png;base64,")
    notes = [a.text for a in fig.layout.annotations]
    assert notes[0] == "0" and notes[-1] == "attention"
    assert [float(t) for t in notes[:-1]] == nice_ticks(float(z.max()))
    assert nice_ticks(1.0) == [0.0, 0.25, 0.5, 0.75, 1.0] and nice_ticks(0.37) == [0.0, 0.1, 0.2, 0.3]
    assert nice_ticks(0.0) == [0.0]


# ---- log axes -----------------------------------------------------------------------------------

def test_a_narrow_log_axis_reaches_out_to_two_ticks():
    """KL from 0.021 to 0.045 lies between the ticks 0.02 and 0.05: Compare's position chart showed no number."""
    from explorer.views.figures.axes import log_axis
    axis = log_axis([0.021, 0.03, 0.045])
    lo, hi = (10 ** v for v in axis["range"])
    assert sum(lo <= t <= hi for t in axis["tickvals"]) >= 2 and lo <= 0.021 and hi >= 0.045
    assert "range" not in log_axis([0.3, 4.2])                            # wide data: Plotly's own range


def test_log_axes_have_a_few_clean_ticks():
    assert log_ticks([0.3, 4.2]) == [0.2, 0.5, 1.0, 2.0, 5.0]
    wide = log_ticks([1e-12, 5])
    assert len(wide) <= 10 and all(f"{t:e}".startswith("1.") for t in wide)
