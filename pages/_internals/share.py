"""Downloads (capture file, figures, tables) and the shareable URL of the view on screen."""
from __future__ import annotations

import streamlit as st

from explorer.views.url_state import ViewState, changed_params
from pages._internals.drawing import Shown
from pages._internals.intervene import keep_capture_interventions
from pages._internals.on_screen import OnScreen
from pages._state import INTERNALS as K


def downloads(cur: OnScreen, shown: Shown) -> None:
    r = cur.readout
    with st.expander("Download and share"):
        c1, c2 = st.columns(2)   # "Capture file (.safetensors)" was cut at 1280 px in two fifths
        with c1:
            can_lens = r.lens_from_model
            rows = r.num_tokens * len(r.residual_layers)
            with_lens = st.toggle(f"Include the logit lens ({rows} layer × position rows)",
                                  value=can_lens and rows <= 4096,
                                  disabled=not can_lens, key=K + "w_file_lens",
                                  help="Lets the file's logit lens work without the model; large prompts take a while.")
            st.download_button("Capture file (.safetensors)", data=lambda: r.capture_file(with_lens),
                               file_name="capture.safetensors", mime="application/octet-stream",
                               on_click="ignore", key=K + "dl_capture", icon=":material/download:")
            st.caption("Open it later from the sidebar: no model needed.")
        with c2:
            for name, fig in shown.figures:
                st.download_button(f"{name}.html", data=lambda f=fig: f.to_html(include_plotlyjs=True, full_html=True),
                                   file_name=f"{name}.html", mime="text/html", on_click="ignore",
                                   key=K + "dl_fig_" + name)
            for name, make in shown.tables:
                st.download_button(f"{name}.csv", data=lambda m=make: m().to_csv(index=True).encode(),
                                   file_name=f"{name}.csv", mime="text/csv", on_click="ignore",
                                   key=K + "dl_csv_" + name)
        st.caption("The address bar holds this view (model, prompt, layer, head, token): copy it to share.")


def sync_url(cur: OnScreen, layer: int, head: int, token: int, view: str) -> None:
    cap = cur.readout.capture
    state = ViewState(model=cap.model_name, precision=cap.precision, prompt=cur.display_text,
                      source=cur.source if cur.source in ("text", "chat", "raw") else "text",
                      layer=layer, head=head, token=token, view=view)
    to_set, to_delete = changed_params(st.query_params.to_dict(), state.to_params())
    for k in to_delete:
        del st.query_params[k]
    if to_set:
        st.query_params.update(to_set)
    keep_capture_interventions(cap)           # `ivcap=`: a capture taken under interventions says which

