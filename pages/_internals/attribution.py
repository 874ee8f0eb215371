"""The Internals page's Attribution view: routes graph, logit attribution, and what a click opens.

Thin: the maths is explorer.analyse.{attribution,routes}, the figures explorer.views.figures.*;
results are memoised on the Readout, so moving the threshold or clicking never reruns the model.
Clicking an attention edge shows the heads that carry it with their maps; clicking a node shows the
logit lens of the state it stands for. The selected head, and each head that carries a clicked
edge, offers "Ablate this head": it joins the Intervene view's interventions (kept in the URL),
and that view opens with the answer's probabilities plain and with the heads off, side by side.
"""
from __future__ import annotations

import streamlit as st

from explorer.analyse.routes import DEFAULT_THRESHOLD, node_vector
from explorer.views.figures.attention import attention_heatmap
from explorer.views.figures.attribution import attribution_heatmap, ranked_table
from explorer.views.figures.routes import EDGE, NODE, routes_figure
from explorer.views.readout import Readout
from explorer.views.teaching import escape_markdown, visible_whitespace
from pages._internals.drawing import Shown, explain, pick_head_from, point_values, selected
from pages._internals.intervene import ablate_head
from pages._state import INTERNALS as K

MAX_HEAD_MAPS = 3


def attribution_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    cap = r.capture
    if cap.components is None or cap.attention is None:
        st.info("This capture has no per-head components: they were switched off in the sidebar "
                "(“Record per-head components”), the file is older, or the capture was over its memory "
                "budget. Switch them on and capture the prompt again with the model loaded.")
        return
    c1, c2 = st.columns([3, 2])
    threshold = c1.slider("Edge threshold (share of a node's input)", 0.01, 0.5, DEFAULT_THRESHOLD, 0.01,
                          key=K + "w_routes_threshold",
                          help="Keep an edge when it brings more than this share of what its target node holds.")
    c2.caption(f"Explaining the prediction at token **{token}** "
               f"“{escape_markdown(visible_whitespace(r.texts[token]))}”: pick another token above.")
    graph = r.routes(token, threshold)
    pick_key = K + "routes_pick"

    def remember_pick() -> None:
        point = selected(K + "fig_routes")
        if point and point.get("customdata") is not None:
            values = point_values(point["customdata"])
            if len(values) == 2:
                st.session_state[pick_key] = (values[0], values[1], token, threshold)

    pick = st.session_state.get(pick_key)
    chosen = (pick[0], pick[1]) if pick and pick[2:] == (token, threshold) else None
    explain("routes_graph")
    shown.figure("routes", lambda: routes_figure(graph, chosen), key=(token, threshold, chosen),
                 on_select=remember_pick)
    if chosen is not None and chosen[0] == EDGE and chosen[1] < len(graph.edges):
        _edge_details(r, graph, graph.edges[chosen[1]], token, shown)
    elif chosen is not None and chosen[0] == NODE and chosen[1] < len(graph.nodes):
        _node_details(r, graph.nodes[chosen[1]])
    else:
        st.caption("Click an edge to see the heads that carry it, or a node to read the logit lens there.")

    att = r.attribution(token)
    explain("logit_attribution")
    target = r.token_text(att.target)
    shown.figure("attribution", lambda: attribution_heatmap(att, target, f"{token} {r.texts[token]}"),
                 key=(token,), on_select=pick_head_from(K + "fig_attribution", "attention"))
    for note in att.notes:
        st.caption(escape_markdown(note))
    if layer < att.heads.shape[0] and head < att.heads.shape[1]:
        _ablate_button(layer, head, f"Selected head: layer {layer}, head {head} "
                                    f"(direct attribution {float(att.heads[layer, head]):+.2f}). Click a cell to select "
                                    "another (it opens that head's map; come back here to ablate it).", "selected")
    st.dataframe(ranked_table(att), hide_index=True, key=K + "attribution_table")


def _edge_details(r: Readout, graph, edge, token: int, shown) -> None:
    src, dst = graph.node(edge.source), graph.node(edge.target)
    st.markdown(f"**{edge.kind.capitalize()} edge**, layer {edge.layer}: token {src.position} → {dst.position}, "
                f"importance {edge.importance:.2f}.")
    if edge.kind != "attention":
        return
    st.markdown("Heads that carry it: " + ", ".join(f"head {h} ({s:.2f})" for h, s in edge.heads[:8]))
    drawable = edge.layer in r.attention_layers
    if not drawable:
        st.info(f"Layer {edge.layer}'s attention maps are not in this capture (left out to stay within the "
                "memory budget), so its heads' maps cannot be drawn.")
    for h, share in edge.heads[:MAX_HEAD_MAPS]:
        _ablate_button(edge.layer, h, f"Head {edge.layer}.{h} carries this edge ({share:.2f}).", f"edge_{h}")
        if drawable:
            shown.figure(f"edge_head_{h}", lambda h=h: attention_heatmap(r.attention_view(edge.layer, h), r.texts,
                                                                     dst.position), key=(edge.layer, h, dst.position))


def _ablate_button(layer: int, head: int, text: str, key: str) -> None:
    c1, c2 = st.columns([3, 2], vertical_alignment="center")
    c1.caption(text)
    c2.button(f"Ablate this head ({layer}.{head})", key=K + "ablate_" + key, on_click=ablate_head, args=(layer, head),
              icon=":material/block:", help="Add it to the Intervene view's interventions and open that view: "
                                            "the answer's probabilities plain and with the heads off, side by side.")


def _node_details(r: Readout, node) -> None:
    cap = r.capture
    what = {"res": f"the residual entering layer {node.layer}", "mid": f"the residual after layer {node.layer}'s attention",
            "mlp": f"the residual after layer {node.layer} (its MLP included)"}[node.kind]
    top = r.node_lens((node.kind, node.layer, node.position), lambda: node_vector(cap.components, node))
    if top is None:
        st.info("The logit lens at a node needs the model's LM head (this capture came from a file).")
        return
    st.markdown(f"**Logit lens** at token {node.position}, {what}:")
    st.dataframe([{"token": visible_whitespace(text), "probability": round(p, 4)} for text, p in top],
                 hide_index=True, key=K + "node_lens")


def attribution_tour_figure(r: Readout, position: int):
    """The tour's attribution step: the heatmap at the last position, for the top prediction."""
    att = r.attribution(position)
    return attribution_heatmap(att, r.token_text(att.target), f"{position} {r.texts[position]}")
