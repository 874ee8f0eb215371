"""What the screen says agrees with itself (issue 22 items 5, 6): titles and legends in plain text,
every label drawn where it fits, titles under the toolbar's strip, ranks as whole numbers, no raw
None, and one rule for visible text (issue 19)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from explorer.analyse.attribution import Attribution
from explorer.analyse.memory_estimate import GPU, GPUS
from explorer.model.errors import clean_text
from explorer.model.visible_text import message_text, plain_label, show_hidden, visible_whitespace
from explorer.record.capture import capture
from explorer.views.figures.architecture import memory_figure
from explorer.views.figures.attribution import attribution_heatmap
from explorer.views.figures.axes import TOOLBAR_PX, category_ticks, title_below_toolbar
from explorer.views.figures.head_summaries import head_summary_figure
from explorer.views.figures.lens import rank_ticks, trajectory_figure
from explorer.views.figures.residual import gain_heatmap, norm_stats_figure
from explorer.views.readout import Readout
from explorer.views.setting_notes import answer_choice_note, precision_note
from explorer.views.units import MISSING, table_cells
from tests.tiny_models import tiny_model

RLO = "\u202e"


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def readout(model) -> Readout:
    cap = capture(model, None, list(range(5, 29)))
    cap.token_texts[4] = "  is"
    return Readout(cap, model)


def title_of(fig) -> str:
    return fig.layout.title.text or ""


# ---- one rule for visible text ----------------------------------------------------------------

def test_one_rule_shows_hidden_characters_in_tokens_titles_and_messages():
    assert show_hidden(f"{RLO}exe") == "⟨U+202E⟩exe"
    assert visible_whitespace(" is") == "␣is" and plain_label(" is") == " is"
    assert plain_label("a\nb") == "a↵b" and plain_label("  ") == "␣␣"          # nothing vanishes
    assert message_text(f"x{RLO}\x00y") == "x⟨U+202E⟩⟨U+0000⟩y"
    assert clean_text(f"\x1b[31mred\x1b[0m {RLO}") == "red ⟨U+202E⟩"               # codes gone, overrides shown
    assert message_text("a" * 100, 10).endswith("… (100 characters)")


# ---- titles and legends plain, tick labels marked ----------------------------------------------

def test_titles_and_legends_carry_no_visible_whitespace_marks(readout):
    att = Attribution(position=4, target=7, logit=2.0, heads=torch.randn(4, 3), mlp=torch.randn(4),
                      attn_bias=torch.zeros(4), remainder=torch.zeros(4), embedding=0.1, bias=0.0)
    fig = attribution_heatmap(att, " is", "4  is")
    assert "␣" not in title_of(fig) and "“ is” at 4 “ is”" in title_of(fig)
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2] and list(fig.layout.yaxis.tickvals) == [0, 1, 2, 3]
    fig = norm_stats_figure(readout.norm_rows(), 2, readout.capture.num_layers)
    names = {t.name for t in fig.data if t.showlegend is not False}
    assert names and not any("␣" in n for n in names) and "final norm" in names
    gains = gain_heatmap(readout.norm_rows())
    assert not any("␣" in t for t in gains.layout.yaxis.ticktext)


def test_every_row_and_head_is_labelled_where_the_labels_fit(readout):
    rows = readout.norm_rows()
    gains = gain_heatmap(rows)
    assert len(gains.layout.yaxis.tickvals) == sum(r.weight is not None for r in rows)
    values = np.random.default_rng(0).random((30, 9)).astype(np.float32)
    fig = head_summary_figure(values, list(range(30)), [h // 3 for h in range(9)], "entropy")
    assert list(fig.layout.yaxis.tickvals) == list(fig.data[0].y) == [f"h{h} · kv{h // 3}" for h in range(9)]
    assert list(fig.layout.xaxis.tickvals) == [str(layer) for layer in range(30)]   # every layer, even at 1280 px
    assert fig.layout.xaxis.tickangle == 0 and fig.layout.yaxis.tickfont.size == 10  # upright, readable
    wide = head_summary_figure(np.zeros((80, 9), np.float32), list(range(80)), [h // 3 for h in range(9)], "entropy")
    assert list(wide.layout.xaxis.tickvals) == [str(layer) for layer in range(0, 80, 3)]  # 80 layers: every 3rd
    assert category_ticks(range(100), room_px=650)["tickvals"] == list(range(0, 100, 2))   # thinned on purpose


def test_titles_start_below_the_toolbar_strip(readout):
    for fig in (norm_stats_figure(readout.norm_rows()), gain_heatmap(readout.norm_rows()),
                trajectory_figure(readout.trajectory(10), readout.texts)):
        title = fig.layout.title
        assert title.yref == "container" and title.yanchor == "top" and title.pad.t >= TOOLBAR_PX
        assert fig.layout.margin.t >= TOOLBAR_PX + 20
    lay = title_below_toolbar(dict(title=dict(text="a<br><sup>b</sup>"), margin=dict(t=10)))
    assert lay["margin"]["t"] >= TOOLBAR_PX + 34


def test_rank_axis_reads_ranks_as_whole_numbers_with_zero_at_the_top(readout):
    fig = trajectory_figure(readout.trajectory(10), readout.texts)
    ax = fig.layout.yaxis2
    assert ax.title.text == "rank (0 = top guess)" and ax.ticktext[0] == "0"
    assert all(t.isdigit() for t in ax.ticktext) and [v - 1 for v in ax.tickvals] == [int(t) for t in ax.ticktext]
    assert rank_ticks(4000)["ticktext"] == ("0", "1", "10", "100", "1000") or \
        list(rank_ticks(4000)["ticktext"]) == ["0", "1", "10", "100", "1000"]


# ---- Memory chart, Compare table ---------------------------------------------------------------

def test_gpu_labels_on_the_memory_chart_stand_apart_beside_the_plot():
    estimates = [SimpleNamespace(label=p, allocated_bytes=b * 2**30, footprint_bytes=b * 2**30)
                 for p, b in (("fp32", 0.5), ("nf4", 0.1))]
    gpus = GPUS[:2] + (GPU("Close 6.2 GB (made up)", 6.2),)                  # two lines 0.2 GiB apart
    fig = memory_figure(estimates, gpus=gpus, extra_gib=6.5)                   # every line drawn
    notes = [a for a in fig.layout.annotations if a.text in {g.name.split(" (")[0] for g in gpus}]
    assert len(notes) == 3 and all(a.xref == "paper" and a.x == 1 and a.xanchor == "left" for a in notes)
    height = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b - 60
    ymax = fig.layout.yaxis.range[1]
    px = sorted(a.y / ymax * height + a.yshift for a in notes)
    assert all(b - a >= 14 - 1e-6 for a, b in zip(px, px[1:]))


def test_memory_chart_names_the_weights_under_each_bar_and_says_when_no_gpu_line_is_near():
    estimates = [SimpleNamespace(label=p, allocated_bytes=b * 2**30, footprint_bytes=b * 2**30)
                 for p, b in (("fp32", 0.5), ("nf4", 0.104))]
    fig = memory_figure(estimates, extra_gib=1.0)                              # 1.5 GiB: far below any GPU
    assert fig.data[0].text is None                                            # no shrunken text in thin bars
    assert list(fig.layout.xaxis.ticktext) == ["fp32<br>0.50 GiB weights", "nf4<br>0.10 GiB weights"]
    assert not fig.layout.shapes and "every precision fits the smallest GPU listed" in fig.layout.title.text


def test_table_cells_show_a_dash_where_there_is_no_number_never_none():
    rows = [{"precision": "fp32", "reference": "(reference)", "min residual cosine": None, "KL": 0.0},
            {"precision": "nf4", "reference": "fp32", "min residual cosine": 0.825761, "KL": 1.41}]
    cells = table_cells(rows)
    assert cells[0]["min residual cosine"] == MISSING and cells[1]["min residual cosine"] == "0.8258"
    assert cells[1]["KL"] == 1.41                                              # no gap: stays a number
    assert "None" not in str(cells)


# ---- notes beside numbers that a setting changed -----------------------------------------------

def test_the_lens_says_when_the_answer_was_not_chosen_greedily():
    greedy = SimpleNamespace(do_sample=False, repetition_penalty=1.0)
    assert answer_choice_note(greedy) is None and answer_choice_note(None) is None
    note = answer_choice_note(SimpleNamespace(do_sample=False, repetition_penalty=1.1))
    assert "repetition penalty 1.1" in note and "raw next-token distribution" in note


def test_a_quantized_capture_says_its_drift_from_compare_or_how_to_see_it():
    assert precision_note("m", "bf16") is None and precision_note("m", None) is None
    text, measured = precision_note("m", "nf4")
    assert not measured and "Compare against bf16" in text
    drift = SimpleNamespace(kl_mean=1.41, top1_agreement=0.57, reference="bf16")
    runs = [SimpleNamespace(model="embedded", model_name="m", precision="nf4", loaded_precision="nf4", drift=drift)]
    text, measured = precision_note("m", "nf4", runs)
    assert measured and "KL 1.41 nats" in text and "57%" in text
