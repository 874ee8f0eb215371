"""The views' controls: layer, head, the token in focus, and the token strip, paged for long prompts.

Why paged: a 128k-token prompt can be neither drawn as one strip nor offered as 128k slider stops.
The strip shows one page of PAGE tokens, the page that holds the focus unless the reader turned to
another; past SLIDER_MAX_TOKENS the focus is typed as a position. Why sticky: on a long prompt the
map is taller than what is left of the window under the controls, so the layer, head and token
pickers stay at the top of the window while the views scroll under them (issue 22: the map and
its controls visible together at 1280×800).
"""
from __future__ import annotations

import streamlit as st

from explorer.views.figures.internals import STRIP_MAX_TOKENS, token_strip
from explorer.views.readout import Readout
from pages._internals.drawing import pick_token_from, token_name
from pages._internals.on_screen import OnScreen
from pages._state import HEAD, LAYER, TOKEN, VIEW_WIDGET
from pages._state import INTERNALS as K

PAGE = STRIP_MAX_TOKENS          # tokens on one page of the strip
SLIDER_MAX_TOKENS = 2048         # above this the focus is a number input, not a slider with a stop per token
PAGE_KEY = VIEW_WIDGET + "strip_page"   # (page, focus when it was turned to); cleared with each new capture
STICKY_KEY = K + "controls"
# Streamlit wraps a keyed container in a layout wrapper of the same height: the wrapper is what sticks
# (a sticky element stays within its parent, and the wrapper's parent is the whole views column)
STICKY_CSS = (f"div[data-testid='stLayoutWrapper']:has(> .st-key-{STICKY_KEY}) {{ position: sticky; top: 3.75rem;"
              " z-index: 20; background: var(--st-background-color, #ffffff);"
              " box-shadow: 0 6px 6px -6px rgba(49, 51, 63, 0.25); }"
              f" .st-key-{STICKY_KEY} {{ background: var(--st-background-color, #ffffff); padding: 0.2rem 0 0.3rem; }}"
              f" .st-key-{K}controls_css {{ display: none; }}")


def controls(cur: OnScreen) -> tuple[int, int, int]:
    """Layer, head and token pickers (sticky), then the strip; returns (layer, head, token)."""
    r = cur.readout
    cap = r.capture
    _keep_layer_shown(r)
    with st.container(key=STICKY_KEY):
        c1, c2, c3 = st.columns([4, 4, 5])
        layer = c1.select_slider("Layer", options=r.view_layers, key=LAYER)
        head = c2.selectbox("Head", list(range(cap.num_heads)), key=HEAD,
                            format_func=lambda h: f"head {h} · KV {cap.kv_head_of[h]}")
        t = r.num_tokens
        if t <= SLIDER_MAX_TOKENS:
            token = c3.select_slider("Token in focus", options=list(range(t)), key=TOKEN,
                                     format_func=lambda i: token_name(r, i))
        else:
            token = c3.number_input(f"Token in focus (position 0–{t - 1})", 0, t - 1, step=1, key=TOKEN,
                                    help="Type any position: the strip turns to its page and every view focuses on it.")
    with st.container(key=K + "controls_css"):
        st.markdown(f"<style>{STICKY_CSS}</style>", unsafe_allow_html=True)
    token_strip_pages(cur, int(token))
    return int(layer), int(head), int(token)


def _keep_layer_shown(r: Readout) -> None:
    """A layer this capture does not hold (dropped over the memory budget, or picked from another
    chart) is said in a sentence and replaced by the nearest one it holds, never a KeyError."""
    want = st.session_state.get(LAYER)
    layers = r.view_layers
    if want is None or want in layers:
        return
    nearest = min(layers, key=lambda layer: abs(layer - int(want)))
    st.info(f"Layer {want} is not in this capture (it was left out to stay within the memory budget); "
            f"showing layer {nearest}, the nearest one kept.")
    st.session_state[LAYER] = nearest


def page_of(token: int) -> int:
    return token // PAGE


def shown_page(t: int, token: int) -> int:
    """The page the strip shows: the one turned to while the focus stays put, else the focus's."""
    turned = st.session_state.get(PAGE_KEY)
    pages = (t + PAGE - 1) // PAGE
    page = turned[0] if turned is not None and turned[1] == token else page_of(token)
    return max(0, min(pages - 1, page))


def _turn(step: int, t: int) -> None:
    token = int(st.session_state.get(TOKEN) or 0)
    st.session_state[PAGE_KEY] = (shown_page(t, token) + step, token)


def token_strip_pages(cur: OnScreen, token: int) -> None:
    """The strip, one page at a time: ◀ and ▶ turn pages without moving the focus; a click on a
    token focuses it; typing a position (the token input) turns to its page."""
    r = cur.readout
    t = r.num_tokens
    window = None
    if t > PAGE:
        page = shown_page(t, token)
        pages = (t + PAGE - 1) // PAGE
        window = (page * PAGE, min(t, (page + 1) * PAGE))
        c1, c2, c3 = st.columns([1, 1, 6], vertical_alignment="center")
        c1.button("◀", key=K + "strip_prev", disabled=page == 0, on_click=_turn, args=(-1, t),
                  width="stretch", help="The previous page of tokens (the focus stays where it is)")
        c2.button("▶", key=K + "strip_next", disabled=page >= pages - 1, on_click=_turn, args=(1, t),
                  width="stretch", help="The next page of tokens (the focus stays where it is)")
        where = "" if window[0] <= token < window[1] else f" · the focus ({token}) is on page {page_of(token) + 1}"
        how = "Type a position in" if t > SLIDER_MAX_TOKENS else "Move"
        c3.caption(f"Page {page + 1} of {pages}: tokens {window[0]}–{window[1] - 1} of {t}{where}. "
                   f"{how} “Token in focus” to jump to any token.")
    strip_key = K + "strip"
    st.plotly_chart(cur.figure(("strip", token, window), lambda: token_strip(r.texts, token, cur.answer_start,
                                                                             window=window)),
                    key=strip_key, config={"displayModeBar": False}, on_select=pick_token_from(strip_key),
                    selection_mode="points")
