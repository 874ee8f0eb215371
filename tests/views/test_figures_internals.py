"""Internals readout and figures on tiny random models: the numbers drawn are the capture's numbers,
long prompts are pooled within the payload budget, and token text is escaped, never markup."""
from __future__ import annotations

import base64
import json
import struct
import zlib

import numpy as np
import plotly.io as pio
import pytest
import torch
from transformers import AutoModelForCausalLM

from explorer.analyse.attention import attention_map, attention_map_pooled, capture_head_summaries, layer_probabilities
from explorer.analyse.capture_bundle import open_with_results
from explorer.analyse.lens import LensHead
from explorer.record.capture import capture
from explorer.views.figures.attention import (
    attention_heatmap,
    gqa_figure,
    head_outline,
    overview_figure,
    select_tile,
    tile_outline,
    token_attention_figure,
)
from explorer.views.figures.embeddings import pca_figure
from explorer.views.figures.head_summaries import head_summary_figure
from explorer.views.figures.internals import plotly_text, span_labels, token_strip
from explorer.views.figures.lens import lens_heatmap, trajectory_figure
from explorer.views.figures.residual import contributions_figure, gain_heatmap, norm_stats_figure, residual_norm_heatmap
from explorer.views.lens_data import LENS_MAX_POSITIONS, cpu_float_lens_head
from explorer.views.pooling import MAX_SIDE, pool_sum
from explorer.views.readout import Readout
from tests.tiny_models import tiny_config, tiny_model

HOSTILE = "<img src=x onerror=alert(1)>"
PAYLOAD_LIMIT = 5_000_000


def payload(fig) -> str:
    """What Streamlit sends: to_dict() then to_json."""
    return pio.to_json(fig.to_dict(), validate=False)


def png_pixels(uri: str) -> np.ndarray:
    """(H, W, 3) of a data: URI written by figures/image.py (truecolour, filter 0 on every row)."""
    data = base64.b64decode(uri.split(",", 1)[1])
    pos, idat, (w, h) = 8, b"", (0, 0)
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 3 * w)
    return rows[:, 1:].reshape(h, w, 3)


def z_of(fig, trace: int = 0) -> np.ndarray:
    """Decode a trace's z from the JSON Plotly sends (typed arrays travel as base64)."""
    z = json.loads(payload(fig))["data"][trace]["z"]
    if isinstance(z, dict):
        dtype = {"f4": np.float32, "u1": np.uint8, "f8": np.float64}[z["dtype"]]
        shape = [int(s) for s in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=dtype).reshape(shape)
    return np.asarray(z, dtype=np.float32)


@pytest.fixture(scope="module")
def short_model():
    """Kept alive for the module: a Readout holds its model only by weak reference."""
    return tiny_model("llama")


@pytest.fixture(scope="module")
def short(short_model) -> Readout:
    cap = capture(short_model, None, list(range(5, 29)))        # 24 tokens
    cap.token_texts[3] = HOSTILE
    cap.token_texts[4] = " the"
    return Readout(cap, short_model)


@pytest.fixture(scope="module")
def long_model():
    config = tiny_config("llama")
    config.max_position_embeddings = 2048
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def long(long_model) -> Readout:
    ids = torch.randint(3, 250, (1200,)).tolist()
    return Readout(capture(long_model, None, ids), long_model)


# ---- attention ---------------------------------------------------------------------------------

def test_heatmap_shows_the_heads_own_probabilities_with_one_label_per_token(short):
    view = short.attention_view(1, 2)
    fig = attention_heatmap(view, short.texts, focus=5)
    z = z_of(fig)
    assert z.dtype == np.float32 and z.shape == (24, 24)
    assert np.allclose(z, attention_map(short.capture, 1, 2).numpy())
    assert np.allclose(z.sum(-1), 1, atol=1e-4)
    x = list(fig.data[0].x)
    assert len(set(x)) == 24                                   # unique even where tokens repeat
    assert fig.layout.shapes[0].y0 == 4.5                      # focus row outlined


def test_token_text_is_escaped_in_labels_hover_and_cells(short):
    text = payload(attention_heatmap(short.attention_view(0, 0), short.texts))
    assert "<img" not in text and '"3 &lt;img' in text       # the label of position 3, escaped
    assert plotly_text(" the") == "␣the" and plotly_text("$x$").startswith("\u200b")
    for fig in (token_strip(short.texts, 3), token_attention_figure(short.token_attention(10), short.texts),
                residual_norm_heatmap(short.residual_norms(), short.texts),
                pca_figure(short.projection(None), short.texts, "t", 3),
                lens_heatmap(short.lens_window(0, 10), short.texts, 3)):
        assert "<img" not in payload(fig)


def test_long_prompts_are_pooled_and_stay_under_the_payload_limit(long):
    t = long.num_tokens
    view = long.attention_view(2, 1)
    assert view.factor == 3 and view.z.shape == (400, 400)
    assert np.allclose(view.z.sum(-1), 1, atol=1e-3)
    labels = span_labels(view.k_spans, long.texts)
    assert labels[0].startswith("0–2 ")
    figs = [attention_heatmap(view, long.texts, t - 1), overview_figure(long.overview()),
            token_attention_figure(long.token_attention(t - 1), long.texts),
            residual_norm_heatmap(long.residual_norms(), long.texts, t - 1), token_strip(long.texts, t - 1),
            pca_figure(long.projection(2, True, True), long.texts, "x", t - 1),
            lens_heatmap(long.lens_window(0, t), long.texts, t - 1)]
    for fig in figs:
        assert len(payload(fig)) < PAYLOAD_LIMIT
    assert long.residual_norms().z.shape[1] <= MAX_SIDE
    assert long.token_attention(t - 1).z.shape[1] <= MAX_SIDE
    assert len(long.lens_window(0, t).positions) == LENS_MAX_POSITIONS


def test_a_window_shows_the_full_resolution_crop(long):
    view = long.attention_view(1, 3, q_window=(1000, 1100), k_window=(0, 64))
    assert view.window and view.factor == 1 and view.z.shape == (100, 64)
    full = attention_map(long.capture, 1, 3).numpy()
    assert np.allclose(view.z, full[1000:1100, :64], atol=1e-6)
    wide = long.attention_view(1, 3, q_window=(0, 1200), k_window=(0, 1200))
    assert wide.z.shape == (MAX_SIDE, MAX_SIDE)                 # cut to the last MAX_SIDE positions


def test_overview_tiles_are_pooled_maps_and_clicks_name_layer_and_head(short):
    ov = short.overview(tile=8)
    assert ov.tiles.shape == (3, 4, 8, 8) and ov.factor == 3
    pooled, factor = attention_map_pooled(short.capture, 2, 3, max_size=8)
    assert factor == 3 and np.allclose(ov.tiles[1 + 1, 3], pooled.numpy(), atol=1e-5)
    fig = overview_figure(ov, (2, 3))
    clicks = fig.data[1]
    assert [list(c) for c in clicks.customdata[:5]] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    box = fig.layout.shapes[0]
    select_tile(fig, ov, (0, 0))
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 != box.x0


def test_overview_is_a_png_image_on_axes_plotly_need_not_measure(short):
    """The mosaic travels as an image (the browser decodes it instead of colouring every cell), and
    its axes have fixed margins: the page lays the selection outline over it by those numbers."""
    ov = short.overview(tile=8)
    fig = overview_figure(ov)
    image = json.loads(payload(fig))["data"][0]
    assert image["type"] == "image" and image["source"].startswith("data:image/png;base64,")
    rgb = png_pixels(image["source"])
    n_layers, n_heads, n, _ = ov.tiles.shape
    assert rgb.shape[0] == n_layers * (n + 1) - 1
    assert (rgb[n] == 255).all()                                       # the row between two layers is a white gap
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert axis.automargin is False and axis.ticklabeloverflow == "allow"


def test_tile_outline_lands_on_the_clicked_tile(short):
    """The page draws the selection over the unchanged figure: the outline, in plot-area fractions,
    must hold the click target of exactly the selected tile."""
    ov = short.overview(tile=8)
    fig = overview_figure(ov)
    clicks = fig.data[1]
    (xa, xb), (ya, yb) = fig.layout.xaxis.range, fig.layout.yaxis.range
    for layer, head in ((0, 0), (2, 3), (1, 2)):
        out = tile_outline(fig, ov, (layer, head))
        inside = [i for i, (x, y) in enumerate(zip(clicks.x, clicks.y))
                  if out.left < (x - xa) / (xb - xa) < out.right and out.top < (y - yb) / (ya - yb) < out.bottom]
        assert [list(clicks.customdata[i]) for i in inside] == [[layer, head]]
        assert out.margin == dict(l=fig.layout.margin.l, r=fig.layout.margin.r, t=fig.layout.margin.t,
                                  b=fig.layout.margin.b)
    assert tile_outline(fig, ov, (99, 0)) is None


def test_head_outline_boxes_exactly_the_chosen_query_head():
    kv_head_of = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    fig = gqa_figure(kv_head_of)
    heads = fig.data[1]                                                   # the query-head markers, at y = 1
    (xa, xb), (ya, yb) = fig.layout.xaxis.range, fig.layout.yaxis.range     # y runs up
    for head in (0, 4, 8):
        out = head_outline(fig, head)
        inside = [h for h, (x, y) in enumerate(zip(heads.x, heads.y))
                  if out.left < (x - xa) / (xb - xa) < out.right and out.top < (yb - y) / (yb - ya) < out.bottom]
        assert inside == [head]
    assert head_outline(fig, 9) is None and head_outline(fig, None) is None


def test_head_summaries_heatmap_has_a_row_per_head_and_a_column_per_layer(short):
    per = short.summary_grids()
    assert per["entropy"].shape == (3, 4)
    at = short.summary_grids(token=10)
    s = capture_head_summaries(short.capture)
    assert np.allclose(at["lookback"], s.lookback[..., 10].numpy())
    fig = head_summary_figure(per["first_token"], short.attention_layers, short.capture.kv_head_of, "first_token",
                              (1, 2))
    assert z_of(fig).shape == (4, 3)                                       # (heads, layers)
    assert np.allclose(z_of(fig), per["first_token"].T)
    assert list(fig.data[1].customdata[6]) == [1, 2]                       # point i: layer i // heads, head i % heads
    assert (fig.data[1].x[6], fig.data[1].y[6]) == (str(short.attention_layers[1]), "h2 · kv1")
    box = [s for s in fig.layout.shapes if s.name == "selected"]
    assert len(box) == 1 and (box[0].x0, box[0].y0) == (0.5, 1.5)          # layer index 1, head 2
    rules = [s.y0 for s in fig.layout.shapes if s.name == "kv group"]
    assert rules == [1.5]                                                  # between the two KV groups


def test_gqa_figure_joins_each_query_head_to_its_kv_head():
    fig = gqa_figure([0, 0, 1, 1], selected_head=2)
    xs = list(fig.data[0].x)
    pairs = [(xs[i], xs[i + 1]) for i in range(0, len(xs), 3)]
    assert pairs == [(0, 0.5), (1, 0.5), (2, 2.5), (3, 2.5)]
    assert "4 query heads → 2 KV heads" in fig.layout.title.text


def test_attention_from_a_token_matches_its_row_in_every_layer(short):
    ta = short.token_attention(12)
    for li, layer in enumerate(ta.layers):
        row = layer_probabilities(short.capture.attention, layer)[:, 12].mean(0)      # (T,) mean over heads
        assert np.allclose(ta.z[li], row.numpy(), atol=1e-5)
    one = short.token_attention(12, head=1)
    assert np.allclose(one.z[0], attention_map(short.capture, 0, 1)[12].numpy(), atol=1e-6)
    fig = token_attention_figure(ta, short.texts)
    assert z_of(fig).shape == (3, 13)                          # keys after the token carry nothing: cut


# ---- residual stream and norms -----------------------------------------------------------------

def test_residual_norms_are_the_lengths_of_the_captured_vectors(short):
    norms = short.residual_norms()
    cap = short.capture
    assert norms.row_names[0] == "embeddings" and norms.z.shape == (4, 24)
    assert np.allclose(norms.z[2], torch.linalg.vector_norm(cap.residual[1].float(), dim=-1).numpy(), rtol=1e-5)
    fig = residual_norm_heatmap(norms, short.texts, focus=7, layer=1)
    assert np.allclose(fig.data[0].customdata, norms.z)          # hover shows the real norm
    assert np.allclose(z_of(fig), np.log10(norms.z), atol=1e-5)


def test_norm_modules_are_placed_by_layer_and_role_for_two_layouts(short):
    rows = short.norm_rows()
    roles = {r.role for r in rows}
    assert roles == {"input_layernorm", "post_attention_layernorm", "final norm"}
    assert [r.layer for r in rows if r.role == "final norm"] == [3]
    gemma = Readout(capture(tiny_model("gemma2"), None, list(range(3, 20))))
    g_roles = [r.role for r in gemma.norm_rows() if r.layer == 0]
    assert len(g_roles) == 4 and "pre_feedforward_layernorm" in g_roles
    fig = norm_stats_figure(gemma.norm_rows(), focus=2, num_layers=3)
    mean_rms = [t for t in fig.data if t.name == "input_layernorm" and t.xaxis == "x"][0]
    expected = [r.input_rms.mean() for r in gemma.norm_rows() if r.role == "input_layernorm"]
    assert np.allclose(mean_rms.y, expected, rtol=1e-5)
    assert z_of(gain_heatmap(gemma.norm_rows())).shape == (13, 64)


def test_contributions_plot_mean_and_focused_token_per_layer(short):
    attn, mlp = short.contributions()
    fig = contributions_figure(attn, mlp, focus=4, layer=1)
    assert [t.name for t in fig.data] == ["attention (mean)", "attention (token 4)", "MLP (mean)", "MLP (token 4)"]
    assert np.allclose(fig.data[3].y, mlp[:, 4])


# ---- embeddings ---------------------------------------------------------------------------------

def test_pca_scatter_has_one_point_per_token_coloured_by_position(short):
    proj = short.projection(2, drop_first=True)
    fig = pca_figure(proj, short.texts, "after layer 2", focus=6)
    assert len(fig.data[0].x) == 23 and list(fig.data[0].marker.color) == list(range(1, 24))
    assert "%" in fig.layout.xaxis.title.text
    normalised = short.projection(2, True, normalise=True)
    assert not np.allclose(normalised.coords.numpy(), proj.coords.numpy())


# ---- logit lens ---------------------------------------------------------------------------------

def test_lens_cells_name_the_top_token_and_the_last_layer_is_the_models_prediction(short):
    cap = short.capture
    window = short.lens_window(14, 24, k=3)
    assert window.token_ids.shape == (3, 10, 3)
    assert int(window.token_ids[-1, -1, 0]) == int(cap.last_logits.argmax())
    fig = lens_heatmap(window, short.texts, focus=20, layer=2)
    assert fig.data[0].text[2][9] == plotly_text(cap.token_text(int(window.token_ids[-1, -1, 0])), 6)
    assert z_of(fig).shape == (3, 10)


def test_trajectory_ends_at_rank_zero_with_the_models_probability(short):
    tr = short.trajectory(-1)
    p = torch.softmax(short.capture.last_logits, -1)
    assert tr.exact and tr.rank[-1] == 0
    assert abs(float(tr.prob[-1]) - float(p.max())) < 1e-3
    fig = trajectory_figure(tr, short.texts)
    assert len(fig.data[0].y) == 3 and fig.layout.yaxis2.type == "log"


def test_a_saved_capture_reads_its_lens_without_the_model(short, tmp_path):
    data = short.capture_file(include_lens=True)
    path = tmp_path / "c.safetensors"
    path.write_bytes(data)
    back, results = open_with_results(str(path))
    opened = Readout(back, results=results)
    assert not opened.lens_from_model and opened.lens_available
    assert not Readout(back).lens_available                   # the lens came with the results, not the capture
    a, b = short.lens_window(10, 20, 3), opened.lens_window(10, 20, 3)
    assert np.array_equal(a.token_ids, b.token_ids) and np.allclose(a.probs, b.probs)
    tr = opened.trajectory(-1)
    assert not tr.exact and tr.rank[-1] == 0
    assert np.allclose(opened.attention_view(1, 1).z, short.attention_view(1, 1).z)


def test_bf16_lens_head_gets_a_shared_float32_copy_that_agrees():
    model = tiny_model("llama", dtype=torch.bfloat16)
    cap = capture(model, None, list(range(3, 15)))
    head = LensHead.from_model(model)
    fast = cpu_float_lens_head(head)
    assert fast is not head and fast.lm_head.weight.dtype == torch.float32
    assert cpu_float_lens_head(head) is fast                      # one copy per model
    assert fast.lm_head.weight.data_ptr() != model.lm_head.weight.data_ptr()
    hidden = cap.residual[-1].float()
    slow = LensHead(head.final_norm, head.lm_head).logits(hidden.bfloat16())
    assert torch.equal(fast.logits(hidden).argmax(-1), slow.argmax(-1))


def test_pooling_keeps_attention_mass():
    x = torch.softmax(torch.randn(4, 10), -1)
    assert torch.allclose(pool_sum(x, 3).sum(-1), torch.ones(4))
