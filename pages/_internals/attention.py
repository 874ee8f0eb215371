"""The attention view: one head's map, where the focused token looks, GQA, every head, head summaries."""
from __future__ import annotations

import contextlib

import streamlit as st

from explorer.views.figures.attention import (
    EXACT_CELLS,
    MAP_MAX_PX,
    attention_heatmap,
    focus_row,
    gqa_figure,
    head_outline,
    overview_figure,
    tile_outline,
    token_attention_figure,
)
from explorer.views.figures.head_summaries import head_summary_figure, select_cell
from explorer.views.figures.map_html import image_map_html, is_image_map
from explorer.views.pooling import Span
from explorer.views.readout import Readout
from pages._internals.drawing import Shown, explain, outline_over, pick_head_from
from pages._state import INTERNALS as K

LONG_MAP_PX = 600          # a long prompt's map: short enough to share a 1280×800 window with the controls
WINDOW_SIZES = (32, 64, 128, EXACT_CELLS)   # a full-resolution window, at most EXACT_CELLS (hover reads cells)
IMAGE_NOTE = ("A map this size is drawn as a picture, a cell to a pixel or two. Turn on “Full-resolution window” "
              "to zoom and read single cells, or download attention_map.html for an interactive copy.")
WIDE_WINDOW_NOTE = (f"A window wider than {EXACT_CELLS} positions is drawn as a picture too: narrow it to zoom and "
                    "read single cells, or download attention_map.html for an interactive copy.")


def attention_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    if not r.has_attention:
        st.info("This capture holds no attention (it was not recorded, or the file was saved without it).")
        return
    q_window, k_window = window_controls(r, token)
    view = r.attention_view(layer, head, q_window, k_window)
    # cached per layer/head/window; a token switch only moves the focus box (no rebuild, same PNG)
    note = WIDE_WINDOW_NOTE if view.window else IMAGE_NOTE
    max_px = LONG_MAP_PX if r.num_tokens > EXACT_CELLS else MAP_MAX_PX
    every = bool(st.session_state.get(K + "w_every_row")) and not view.window and r.num_tokens <= EXACT_CELLS
    fig = shown.figure("attention_map", lambda: attention_heatmap(view, r.texts, token, max_px, every),
                       key=(layer, head, q_window, k_window, every),
                       mark=lambda fig: focus_row(fig, view.q_spans, token),
                       as_html=lambda fig: image_map_html(fig, note) if is_image_map(fig) else None)
    if is_image_map(fig):
        st.caption(note)
    elif every or len(fig.layout.yaxis.tickvals) < fig.layout.meta["rows"]:
        # the map fits the window with every k-th row labelled; a teacher may want every one
        st.toggle("Label every row (a taller map: scroll to see all of it)", key=K + "w_every_row",
                  help="Rows are labelled every few tokens so that the map fits the window; hover names every "
                       "cell's tokens either way.")
    explain("attention_map")
    c1, c2 = st.columns([3, 2])
    with c1:
        only_head = st.toggle("Only the chosen head", key=K + "w_token_head")
        which = head if only_head else None
        shown.figure("token_attention", lambda: token_attention_figure(r.token_attention(token, which), r.texts),
                     key=(token, which))
        explain("token_attention")
    with c2:
        gqa = shown.figure("gqa", lambda: gqa_figure(r.capture.kv_head_of), key=())   # drawn once: the box moves
        outline_over(K + "fig_gqa", head_outline(gqa, head))
        explain("gqa")
    more = st.segmented_control("More", ["All heads", "Head summaries"], key=K + "w_more", required=True,
                                default="All heads", label_visibility="collapsed")
    if more == "Head summaries":
        head_summaries_panel(r, layer, head, token, shown)
    else:
        with contextlib.nullcontext() if r.is_cached("overview", 16) else st.spinner("Pooling every head's map…"):
            ov = r.overview()
        chart = K + "fig_overview"   # the figure stays the same; only the outline over it moves
        fig = shown.figure("overview", lambda: overview_figure(ov), key=(), on_select=pick_head_from(chart))
        outline_over(chart, tile_outline(fig, ov, (layer, head)))
        explain("attention_overview")


def window_controls(r: Readout, token: int) -> tuple[Span | None, Span | None]:
    """A long prompt's map is a pooled picture; a full-resolution window of it can be moved anywhere
    by typing where it ends ("what does position 90,000 attend to?": type 90000). Returns the
    (query, key) windows, or (None, None) for the whole map."""
    if r.num_tokens <= EXACT_CELLS:     # the whole map is exact then: hover and zoom already work
        return None, None
    full = st.toggle("Full-resolution window", key=K + "w_fullres",
                     help="Show a window of the map cell by cell, with zoom, and hover that reads each value.")
    if not full:
        return None, None
    t = r.num_tokens
    c1, c2, c3 = st.columns([2, 2, 1])
    q_end = c1.number_input(f"Query position (0–{t - 1})", 0, t - 1, value=token, step=1, key=K + "w_q_end",
                            help="The window's last row: what this position attends to, and the rows before it.")
    k_end = c2.number_input("Last key position", 0, t - 1, value=None, step=1, key=K + "w_k_end",
                            placeholder="same as the query",
                            help="The window's last column; empty: the keys just before the query (the diagonal).")
    size = c3.selectbox("Window", WINDOW_SIZES, index=WINDOW_SIZES.index(128), key=K + "w_size",
                        format_func=lambda n: f"{n} × {n}")
    q_end = int(q_end)
    k_end = q_end if k_end is None else int(k_end)
    return (max(0, q_end + 1 - size), q_end + 1), (max(0, k_end + 1 - size), k_end + 1)


def head_summaries_panel(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    at_token = st.toggle("At the focused token (instead of the mean over tokens)", key=K + "w_sum_token")
    if not r.summaries_ready:
        with st.spinner("Computing entropy, first-token share and look-back for every head…"):
            r.summary_grids()
    values = r.summary_grids(token if at_token else None)
    # one above the other at full width: a row per head, so every head's label fits (see head_summary_figure)
    for metric in ("entropy", "first_token", "lookback"):
        name = f"summary_{metric}"
        shown.figure(name, lambda m=metric: head_summary_figure(values[m], r.attention_layers, r.capture.kv_head_of,
                                                                m, None, token if at_token else None),
                     key=(token if at_token else None,), on_select=pick_head_from(K + "fig_" + name),
                     mark=lambda fig: select_cell(fig, r.attention_layers, (layer, head)))
    explain("head_summaries")
    shown.table("head_summaries", r.head_table)

