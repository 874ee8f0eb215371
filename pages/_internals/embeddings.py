"""The embeddings view: PCA of the input embeddings and of the hidden states after a layer."""
from __future__ import annotations

import streamlit as st

from explorer.views.figures.embeddings import pca_figure
from explorer.views.readout import Readout
from pages._internals.drawing import Shown, explain, pick_token_from
from pages._state import INTERNALS as K


def embeddings_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    c1, c2 = st.columns(2)
    drop = c1.toggle("Leave out token 0 (often far from everything else)", value=r.num_tokens > 3, key=K + "w_pca_drop")
    norm = c2.toggle("Normalise each vector first (as the next norm module does)", value=True, key=K + "w_pca_norm",
                     help="Without it, a few tokens with massive activations take the whole first component.")
    cap = r.capture
    c1, c2 = st.columns(2)
    if cap.embeddings is not None:
        with c1:
            proj = r.projection(None, drop, norm)
            shown.figure("pca_embeddings", lambda: pca_figure(proj, r.texts, "Input embeddings", token),
                         key=(drop, norm, token), on_select=pick_token_from(K + "fig_pca_embeddings"))
            shown.table("pca_embeddings", lambda: r.projection_table(proj))
    pca_layer = layer if layer in r.residual_layers else (r.residual_layers[-1] if r.residual_layers else None)
    if pca_layer is not None:
        with c2:
            proj_l = r.projection(pca_layer, drop, norm)
            title = f"Hidden states after layer {pca_layer}"
            shown.figure("pca_layer", lambda: pca_figure(proj_l, r.texts, title, token),
                         key=(pca_layer, drop, norm, token), on_select=pick_token_from(K + "fig_pca_layer"))
            shown.table(f"pca_layer_{pca_layer}", lambda: r.projection_table(proj_l))
    explain("pca")

