"""The logit-lens view: top tokens after every layer over a window, and the focused token's trajectory."""
from __future__ import annotations

import contextlib

import streamlit as st

from explorer.views.figures.lens import lens_heatmap, trajectory_figure
from explorer.views.lens_data import LENS_MAX_POSITIONS
from explorer.views.readout import Readout
from pages._internals.drawing import Shown, explain
from pages._internals.notes import answer_settings_note
from pages._internals.on_screen import on_screen
from pages._state import INTERNALS as K


def lens_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    if not r.lens_available:
        st.info("The logit lens needs the model's final norm and LM head: this capture was opened from a file "
                "saved without its logit lens. Capture the prompt with the model loaded.")
        return
    t = r.num_tokens
    key = K + "w_lens_window"
    if key not in st.session_state:
        stop = min(t - 1, max(token, 0))
        st.session_state[key] = (max(0, stop - 15), stop)
    if t > 1:
        a, b = st.slider(f"Positions (at most {LENS_MAX_POSITIONS})", 0, t - 1, key=key)
    else:
        a, b = 0, 0
    if b - a + 1 > LENS_MAX_POSITIONS:
        st.caption(f"Showing the last {LENS_MAX_POSITIONS} positions of the range.")
    try:
        cached = r.is_cached("lens", a, b + 1, 3)
        with contextlib.nullcontext() if cached else st.spinner("Applying the LM head after every layer…"):
            window = r.lens_window(a, b + 1, k=3)
        shown.figure("lens", lambda: lens_heatmap(window, r.texts, token, layer), key=(a, b, token, layer))
        answer_settings_note(on_screen().origin)      # the chat's repetition penalty / sampling vs the raw lens
        explain("lens_map")
        shown.table("logit_lens", lambda: r.lens_table(window))
        shown.figure("trajectory", lambda: trajectory_figure(r.trajectory(token), r.texts), key=(token,))
        explain("trajectory")
    except LookupError as exc:
        st.info(str(exc))

