"""The guided tour (steps quoting this capture's numbers, each with its figure) and the glossary."""
from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st

from explorer.views.figures.attention import attention_heatmap
from explorer.views.figures.embeddings import pca_figure
from explorer.views.figures.head_summaries import head_summary_figure
from explorer.views.figures.lens import lens_heatmap, trajectory_figure
from explorer.views.figures.residual import contributions_figure, norm_stats_figure, residual_norm_heatmap
from explorer.views.readout import Readout
from explorer.views.teaching import GLOSSARY, TOUR, render
from pages._internals.attribution import attribution_tour_figure
from pages._internals.drawing import Shown
from pages._state import INTERNALS as K
from pages._state import TOUR_STEP


def _step() -> int:
    return min(max(int(st.session_state.get(TOUR_STEP, 0)), 0), len(TOUR) - 1)


def _move(delta: int) -> None:
    """Button callback: runs before the script, so the buttons below are drawn for the new step
    (a check after st.button would draw them for the old one, one click behind)."""
    st.session_state[TOUR_STEP] = min(max(_step() + delta, 0), len(TOUR) - 1)


def tour_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    step_i = _step()
    c1, c2, c3 = st.columns([2, 5, 2])   # wide enough for "← Previous" uncut at 1280 px
    c1.button("← Previous", key=K + "tour_prev", disabled=step_i == 0, on_click=_move, args=(-1,))
    c3.button("Next →", key=K + "tour_next", disabled=step_i == len(TOUR) - 1, on_click=_move, args=(1,))
    step = TOUR[step_i]
    c2.progress((step_i + 1) / len(TOUR), text=f"Step {step_i + 1} of {len(TOUR)}")
    with st.spinner("Gathering this prompt's numbers…"):
        facts = r.tour_facts() if r.has_attention or r.capture.residual is not None else {}
    st.subheader(step.title)
    st.markdown(render(step.body, facts))
    tour_figure(r, step.figure, facts, token, shown)


def tour_figure(r: Readout, which: str, facts: dict, token: int, shown: Shown) -> None:
    """The figure a tour step talks about, at the layer/head the step names (not the controls')."""
    cap = r.capture
    t = r.num_tokens
    drop = t > 3
    builders: dict[str, tuple[bool, Callable[[], go.Figure]]] = {
        "pca_embeddings": (cap.embeddings is not None,
                           lambda: pca_figure(r.projection(None, drop, True), r.texts, "Input embeddings", token)),
        "pca_last": (cap.residual is not None,
                     lambda: pca_figure(r.projection(r.residual_layers[-1], drop, True), r.texts,
                                        f"Hidden states after layer {r.residual_layers[-1]}", token)),
        "residual_norms": (cap.embeddings is not None or cap.residual is not None,
                           lambda: residual_norm_heatmap(r.residual_norms(), r.texts, token)),
        "norm_stats": (bool(cap.norms), lambda: norm_stats_figure(r.norm_rows(), token, cap.num_layers)),
        "attention_local": (r.has_attention, lambda: attention_heatmap(
            r.attention_view(facts.get("local_layer", r.view_layers[0]), facts.get("local_head", 0)), r.texts, token)),
        "head_summaries": (r.has_attention, lambda: head_summary_figure(
            r.summary_grids()["first_token"], r.attention_layers, cap.kv_head_of, "first_token",
            (facts.get("sink_layer"), facts.get("sink_head")))),
        "contributions": (r.contributions() is not None, lambda: contributions_figure(*r.contributions(), focus=token)),
        "lens": (r.lens_available, lambda: lens_heatmap(r.lens_window(max(0, t - 16), t, k=3), r.texts, t - 1)),
        "trajectory": (r.lens_available, lambda: trajectory_figure(r.trajectory(t - 1), r.texts)),
        "attribution": (cap.components is not None, lambda: attribution_tour_figure(r, t - 1)),
    }
    if which == "tokens":
        st.dataframe(r.tokens_table(), hide_index=True, key=K + "tour_tokens", height=240)
        return
    available, build = builders.get(which, (False, None))
    if not available:
        st.info("This capture does not hold what this step shows.")
        return
    try:
        shown.figure("tour_" + which, build, key=(token,))
    except LookupError as exc:
        st.info(str(exc))


def glossary_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    st.markdown("\n".join(f"- **{term}**: {text}" for term, text in sorted(GLOSSARY.items())))

