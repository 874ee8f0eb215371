"""The views fragment: caption, layer/head/token controls, the chosen view, downloads, the URL.

Everything here reads the memoised Readout, so switching layer, head, token or view reruns this
fragment alone and never the model.
"""
from __future__ import annotations

import streamlit as st

from explorer.record.interventions import NOTE_PREFIX as INTERVENED
from explorer.views.pooling import MAX_SIDE
from explorer.views.teaching import escape_markdown
from explorer.views.url_state import VIEWS
from pages._internals.attention import attention_view
from pages._internals.attribution import attribution_view
from pages._internals.controls import controls
from pages._internals.drawing import Shown, explain
from pages._internals.embeddings import embeddings_view
from pages._internals.intervene import intervene_view
from pages._internals.lens import lens_view
from pages._internals.notes import precision_drift_note
from pages._internals.on_screen import on_screen
from pages._internals.residual import residual_view
from pages._internals.share import downloads, sync_url
from pages._internals.tour import glossary_view, tour_view
from pages._state import VIEW

VIEW_NAMES = {"attention": "Attention", "residual": "Residual & norms", "embeddings": "Embeddings",
              "lens": "Logit lens", "attribution": "Attribution", "intervene": "Intervene", "tour": "Guided tour", "glossary": "Glossary"}


@st.fragment
def views_fragment() -> None:
    cur = on_screen()
    if cur is None:
        st.info("Chat with the model on the left, or capture a prompt there, and this side shows what "
                "happened inside it, layer by layer. You can also open a saved capture file from the sidebar.")
        return
    r = cur.readout
    cap = r.capture
    # model name, origin (an uploaded file's name) and notes may come from a file: shown, never rendered
    precision = f" ({escape_markdown(cap.precision)})" if cap.precision else " (precision unknown)"
    st.caption(f"{escape_markdown(cap.model_name)}{precision} · {r.num_tokens} tokens · {cap.num_layers} layers × "
               f"{cap.num_heads} heads ({cap.num_kv_heads} KV heads) · from the {escape_markdown(cur.origin)}")
    for note in cap.notes:   # a capture taken under interventions is not a reduced one: say which applied
        if note.startswith(INTERVENED):
            st.info(f"Taken with interventions: {escape_markdown(note[len(INTERVENED):])} (not the plain model).")
        else:
            st.warning(f"Reduced capture: {escape_markdown(note)}")
    precision_drift_note(cur)                      # NF4 moves the numbers: by how much (Compare), or how to see it
    if r.is_pooled:
        st.caption(f"Long prompt ({r.num_tokens} tokens): heatmaps are block-pooled to at most {MAX_SIDE} cells a "
                   "side. Turn on “Full-resolution window” above the attention map to see a window cell by cell.")
    layer, head, token = controls(cur)
    view = st.segmented_control("View", list(VIEWS), format_func=VIEW_NAMES.get, key=VIEW, required=True,
                                label_visibility="collapsed") or "attention"
    shown = Shown(cur)
    shown.table("tokens", r.tokens_table)
    explain(view)
    body = {"attention": attention_view, "residual": residual_view, "embeddings": embeddings_view,
            "lens": lens_view, "attribution": attribution_view, "intervene": intervene_view, "tour": tour_view, "glossary": glossary_view}[view]
    body(r, layer, head, token, shown)
    downloads(cur, shown)
    sync_url(cur, layer, head, token, view)
