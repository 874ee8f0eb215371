"""The internals page's parts: link restore, capture controls, and the views fragment.

State per session (st.session_state, never cache_resource):
  internals_current   Current: the Readout of the capture on screen, and where it came from
  internals_layer / _head / _token / _view   the view controls (widget keys)
  internals_pending   a ViewState from a shared link, applied once its capture exists
The model runs only in `run_capture`; everything inside the fragment reads the memoised Readout,
so switching layer, head, token or view reruns the fragment alone and never the model.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import plotly.graph_objects as go
import streamlit as st

from explorer.record.capture import Capture, CaptureOptions, PromptTooLongError, capture
from explorer.views.figures.attention import attention_heatmap, gqa_figure, head_summary_figure, overview_figure, \
    select_cell, select_tile, token_attention_figure
from explorer.views.figures.embeddings import pca_figure
from explorer.views.figures.internals import token_strip
from explorer.views.figures.lens import lens_heatmap, trajectory_figure
from explorer.views.figures.residual import contributions_figure, gain_heatmap, norm_stats_figure, residual_norm_heatmap
from explorer.views.lens_data import LENS_MAX_POSITIONS
from explorer.views.pooling import MAX_SIDE
from explorer.views.readout import Readout
from explorer.views.teaching import EXPLANATIONS, GLOSSARY, TOUR, escape_markdown, render, visible_whitespace
from explorer.views.url_state import VIEWS, ViewState, changed_params

K = "internals_"
CURRENT, PENDING, LINK_READ, SEEN_SEQ, UPLOAD_SEEN = (K + "current", K + "pending", K + "link_read",
                                                      K + "seen_sequence", K + "upload_seen")
LAYER, HEAD, TOKEN, VIEW, TOUR_STEP = K + "layer", K + "head", K + "token", K + "view", K + "tour_step"
PROMPT, CHAT_TEMPLATE, FOLLOW, BUDGET = K + "prompt", K + "chat_template", K + "follow_chat", K + "budget_mib"
VIEW_NAMES = {"attention": "Attention", "residual": "Residual & norms", "embeddings": "Embeddings",
              "lens": "Logit lens", "tour": "Guided tour", "glossary": "Glossary"}
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass
class Current:
    """The capture on screen and what produced it (for the shareable link)."""
    readout: Readout
    prompt: str | None        # None: opened from a file, not reproducible from a link
    source: str               # "text" | "chat" | "raw" | "file"
    origin: str               # shown to the user, e.g. "typed prompt", "chat turn", "file x.safetensors"
    figures: OrderedDict = field(default_factory=OrderedDict, repr=False)   # key -> go.Figure, LRU

    def figure(self, key: tuple, build: Callable[[], go.Figure], keep: int = 48) -> go.Figure:
        """A figure built once per capture and arguments: a switch back to a layer seen before, or
        a figure the switch does not change, costs only its serialisation."""
        if key in self.figures:
            self.figures.move_to_end(key)
            return self.figures[key]
        fig = self.figures[key] = build()
        while len(self.figures) > keep:
            self.figures.popitem(last=False)
        return fig


def current() -> Current | None:
    return st.session_state.get(CURRENT)


# --------------------------------------------------------------------------------------------
# Link restore and capture
# --------------------------------------------------------------------------------------------

def restore_link() -> None:
    """Once per session: read the URL, pre-fill the prompt, remember layer/head/token for later."""
    if st.session_state.get(LINK_READ):
        return
    st.session_state[LINK_READ] = True
    state = ViewState.from_params(st.query_params.to_dict())
    st.session_state[PENDING] = state
    if state.prompt:
        st.session_state[PROMPT] = state.prompt
        st.session_state[CHAT_TEMPLATE] = state.source == "chat"
    st.session_state[VIEW] = state.view
    for problem in state.problems:
        st.warning(f"Part of the link was ignored: {problem}.")


def capture_options(model_name: str) -> CaptureOptions:
    mib = int(st.session_state.get(BUDGET) or 0)
    return CaptureOptions(memory_budget_bytes=mib * 2**20 if mib > 0 else None, model_name=model_name)


def run_capture(loaded, prompt, text: str, source: str, origin: str) -> bool:
    """The one place the model runs. Returns False (with a message) when the prompt can't be captured."""
    try:
        with st.status(f"Capturing the {origin} with {loaded.name}…", expanded=False) as status:
            cap = capture(loaded.model, loaded.tokenizer, prompt, capture_options(loaded.name))
            status.update(label=f"Captured {cap.num_tokens} tokens × {cap.num_layers} layers", state="complete")
    except (PromptTooLongError, ValueError) as exc:
        st.error(str(exc))
        return False
    set_current(Current(Readout(cap), text, source, origin))
    return True


def set_current(cur: Current) -> None:
    """Show a new capture. Layer and head come from a pending link, else stay where the user was
    (clamped to what this capture has: following a conversation keeps the head under study); the
    focus goes to the link's token, else the last one."""
    st.session_state[CURRENT] = cur
    r = cur.readout
    pending: ViewState | None = st.session_state.pop(PENDING, None)
    kept = ViewState(layer=st.session_state.get(LAYER), head=st.session_state.get(HEAD))
    state = (pending or kept).clamp(r.view_layers, r.capture.num_heads, r.num_tokens)
    layers = r.view_layers
    st.session_state[LAYER] = state.layer if state.layer is not None else layers[len(layers) // 2]
    st.session_state[HEAD] = state.head if state.head is not None else 0
    st.session_state[TOKEN] = state.token if state.token is not None else r.num_tokens - 1
    st.session_state[TOUR_STEP] = 0
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(K + "w_"):   # per-view widgets (windows, toggles)
            del st.session_state[key]


def _sequence_key(ids) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


def capture_controls(loaded) -> None:
    """Left column, under the chat: follow the conversation, or capture a typed prompt."""
    st.toggle("Capture each chat turn (prompt + answer)", value=True, key=FOLLOW,
              help="After every answer, the whole conversation so far is captured, generated tokens included.")
    ids = st.session_state.get("last_sequence_ids")
    if loaded is not None and ids and st.session_state.get(FOLLOW, True):
        key = _sequence_key(ids)
        if st.session_state.get(SEEN_SEQ) != key:
            st.session_state[SEEN_SEQ] = key
            text = loaded.tokenizer.decode(list(ids))
            run_capture(loaded, list(ids), text, "raw", "chat turn")
    with st.form(K + "capture_form", border=False):
        st.text_area("Or capture a prompt without generating", key=PROMPT, height=90,
                     placeholder="The capital of France is")
        st.toggle("Wrap it in the chat template", key=CHAT_TEMPLATE)
        submitted = st.form_submit_button("Capture this prompt", type="primary", disabled=loaded is None)
    text = st.session_state.get(PROMPT) or ""
    if submitted and text.strip():
        chat = bool(st.session_state.get(CHAT_TEMPLATE))
        prompt = [{"role": "user", "content": text}] if chat else text
        run_capture(loaded, prompt, text, "chat" if chat else "text", "typed prompt")
    elif submitted:
        st.warning("Type a prompt first.")
    _capture_from_link(loaded)


def _capture_from_link(loaded) -> None:
    """A shared link's prompt is captured automatically when the same model is loaded."""
    pending: ViewState | None = st.session_state.get(PENDING)
    if pending is None or not pending.prompt or current() is not None:
        return
    if loaded is None:
        st.info("This link holds a prompt; load a model to capture it.")
        return
    if pending.model and pending.model != loaded.name:
        st.info(f"This link was made with {escape_markdown(pending.model)}; {escape_markdown(loaded.name)} is "
                "loaded. Press “Capture this prompt” to run the prompt on it.")
        return
    prompt = [{"role": "user", "content": pending.prompt}] if pending.source == "chat" else pending.prompt
    if pending.source == "raw":
        prompt = loaded.tokenizer(pending.prompt, add_special_tokens=False)["input_ids"]
    run_capture(loaded, prompt, pending.prompt, pending.source, "shared link")


def settings_sidebar() -> None:
    with st.sidebar:
        st.subheader("Capture")
        st.number_input("Memory budget (MiB, 0 = half the free RAM)", min_value=0, max_value=1 << 20, value=0,
                        step=64, key=BUDGET,
                        help="Over budget, the capture keeps evenly spaced layers only, and says so.")
        upload = st.file_uploader("Open a capture file (no model needed)", type=["safetensors"],
                                  key=K + "upload")
        if upload is not None and st.session_state.get(UPLOAD_SEEN) != upload.file_id:
            st.session_state[UPLOAD_SEEN] = upload.file_id
            open_upload(upload.name, upload.getvalue())


def open_upload(name: str, data: bytes) -> None:
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = Capture.open(path)
    except Exception as exc:   # noqa: BLE001 - any unreadable file becomes a message
        st.sidebar.error(f"Could not open {escape_markdown(name)}: {escape_markdown(str(exc))}")
        return
    finally:
        os.unlink(path)
    st.session_state.pop(PENDING, None)
    set_current(Current(Readout(cap), None, "file", f"file {name}"))


# --------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------

class Shown:
    """Figures and tables drawn in this fragment run, offered as downloads at the end."""

    def __init__(self, cur: Current) -> None:
        self.cur = cur
        self.figures: list[tuple[str, go.Figure]] = []
        self.tables: list[tuple[str, Callable]] = []

    def figure(self, name: str, build: Callable[[], go.Figure], key: tuple | None = None,
               on_select: Callable | None = None, mark: Callable[[go.Figure], object] | None = None) -> None:
        """Draw a figure; `key` caches it per capture, `mark` then updates its selection outline."""
        fig = self.cur.figure((name,) + key, build) if key is not None else build()
        if mark is not None:
            mark(fig)
        self.figures.append((name, fig))
        st.plotly_chart(fig, key=K + "fig_" + name, config=PLOTLY_CONFIG,
                        on_select=on_select or "ignore", selection_mode="points")

    def table(self, name: str, make) -> None:
        self.tables.append((name, make))


def explain(key: str) -> None:
    e = EXPLANATIONS[key]
    st.caption(f"**{e.title}.** {e.shows} *How to read it:* {e.read}")


def _selected(chart_key: str) -> dict | None:
    state = st.session_state.get(chart_key)
    points = (state or {}).get("selection", {}).get("points") or []
    return points[0] if points else None


def _point_values(value) -> list[int]:
    """customdata of a clicked point as ints: a list, a scalar, or a typed array ({"0": a, "1": b})."""
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value, key=int)]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [int(v) for v in value]


def _pick_head_from(chart_key: str) -> Callable[[], None]:
    def callback() -> None:
        point = _selected(chart_key)
        if point and point.get("customdata") is not None:
            values = _point_values(point["customdata"])
            if len(values) == 2:
                st.session_state[LAYER], st.session_state[HEAD] = values
    return callback


def _pick_token_from(chart_key: str) -> Callable[[], None]:
    def callback() -> None:
        point = _selected(chart_key)
        if point is not None and point.get("customdata") is not None:
            st.session_state[TOKEN] = _point_values(point["customdata"])[0]
    return callback


def token_name(r: Readout, i: int) -> str:
    text = visible_whitespace(r.texts[i])
    return f"{i} · {text[:24]}"


# --------------------------------------------------------------------------------------------
# The views fragment
# --------------------------------------------------------------------------------------------

@st.fragment
def views_fragment() -> None:
    cur = current()
    if cur is None:
        st.info("Chat with the model on the left, or capture a prompt there, and this side shows what "
                "happened inside it, layer by layer. You can also open a saved capture file from the sidebar.")
        return
    r = cur.readout
    cap = r.capture
    # model name, origin (an uploaded file's name) and notes may come from a file: shown, never rendered
    st.caption(f"{escape_markdown(cap.model_name)} · {r.num_tokens} tokens · {cap.num_layers} layers × "
               f"{cap.num_heads} heads ({cap.num_kv_heads} KV heads) · from the {escape_markdown(cur.origin)}")
    for note in cap.notes:
        st.warning(f"Reduced capture: {escape_markdown(note)}")
    if r.is_pooled:
        st.info(f"Long prompt ({r.num_tokens} tokens): heatmaps are block-pooled to at most {MAX_SIDE} cells a "
                "side. Choose a window under the attention map for full resolution.")
    layer, head, token = controls(cur)
    view = st.segmented_control("View", list(VIEWS), format_func=VIEW_NAMES.get, key=VIEW, required=True,
                                label_visibility="collapsed") or "attention"
    shown = Shown(cur)
    shown.table("tokens", r.tokens_table)
    explain(view)
    body = {"attention": attention_view, "residual": residual_view, "embeddings": embeddings_view,
            "lens": lens_view, "tour": tour_view, "glossary": glossary_view}[view]
    body(r, layer, head, token, shown)
    downloads(cur, shown)
    sync_url(cur, layer, head, token, view)


def controls(cur: Current) -> tuple[int, int, int]:
    r = cur.readout
    cap = r.capture
    c1, c2, c3 = st.columns([3, 2, 4])
    layer = c1.select_slider("Layer", options=r.view_layers, key=LAYER)
    head = c2.selectbox("Head", list(range(cap.num_heads)), key=HEAD,
                        format_func=lambda h: f"head {h} · KV {cap.kv_head_of[h]}")
    token = c3.select_slider("Token in focus", options=list(range(r.num_tokens)), key=TOKEN,
                             format_func=lambda i: token_name(r, i))
    strip_key = K + "strip"
    st.plotly_chart(cur.figure(("strip", token), lambda: token_strip(r.texts, token)), key=strip_key,
                    config={"displayModeBar": False}, on_select=_pick_token_from(strip_key), selection_mode="points")
    return int(layer), int(head), int(token)


# ---- attention ---------------------------------------------------------------------------

def attention_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    if not r.has_attention:
        st.info("This capture holds no attention (it was not recorded, or the file was saved without it).")
        return
    q_window = k_window = None
    if r.is_pooled:
        full = st.toggle("Full-resolution window", key=K + "w_fullres")
        if full:
            t = r.num_tokens
            c1, c2 = st.columns(2)
            default_q = (max(0, token - 127), min(t - 1, max(token, 127)))   # 128 positions ending at the focus
            q_window = c1.slider("Query positions", 0, t - 1, default_q, key=K + "w_qwin")
            k_window = c2.slider("Key positions", 0, t - 1, default_q, key=K + "w_kwin")
            q_window, k_window = (q_window[0], q_window[1] + 1), (k_window[0], k_window[1] + 1)
            if max(q_window[1] - q_window[0], k_window[1] - k_window[0]) > MAX_SIDE:
                st.caption(f"Windows are cut to the last {MAX_SIDE} positions.")
    shown.figure("attention_map", lambda: attention_heatmap(r.attention_view(layer, head, q_window, k_window), r.texts,
                                                            token), key=(layer, head, q_window, k_window, token))
    explain("attention_map")
    c1, c2 = st.columns([3, 2])
    with c1:
        only_head = st.toggle("Only the chosen head", key=K + "w_token_head")
        which = head if only_head else None
        shown.figure("token_attention", lambda: token_attention_figure(r.token_attention(token, which), r.texts),
                     key=(token, which))
        explain("token_attention")
    with c2:
        shown.figure("gqa", lambda: gqa_figure(r.capture.kv_head_of, head), key=(head,))
        explain("gqa")
    more = st.segmented_control("More", ["All heads", "Head summaries"], key=K + "w_more", required=True,
                                default="All heads", label_visibility="collapsed")
    if more == "Head summaries":
        head_summaries_panel(r, layer, head, token, shown)
    else:
        with contextlib.nullcontext() if r.is_cached("overview", 16) else st.spinner("Pooling every head's map…"):
            ov = r.overview()
        shown.figure("overview", lambda: overview_figure(ov), key=(), on_select=_pick_head_from(K + "fig_overview"),
                     mark=lambda fig: select_tile(fig, ov, (layer, head)))
        explain("attention_overview")


def head_summaries_panel(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    at_token = st.toggle("At the focused token (instead of the mean over tokens)", key=K + "w_sum_token")
    if not r.summaries_ready:
        with st.spinner("Computing entropy, first-token share and look-back for every head…"):
            r.head_summaries()
    values = r.head_summaries(token if at_token else None)
    cols = st.columns(3)
    for col, metric in zip(cols, ("entropy", "first_token", "lookback")):
        with col:
            name = f"summary_{metric}"
            shown.figure(name, lambda m=metric: head_summary_figure(values[m], r.attention_layers, r.capture.kv_head_of,
                                                                    m, None, token if at_token else None),
                         key=(token if at_token else None,), on_select=_pick_head_from(K + "fig_" + name),
                         mark=lambda fig: select_cell(fig, r.attention_layers, (layer, head)))
    explain("head_summaries")
    shown.table("head_summaries", r.head_table)


# ---- residual stream and norms -----------------------------------------------------------

def residual_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    cap = r.capture
    if cap.embeddings is not None or cap.residual is not None:
        shown.figure("residual_norms", lambda: residual_norm_heatmap(r.residual_norms(), r.texts, token, layer),
                     key=(token, layer))
        explain("residual_norms")
        shown.table("residual_norms", r.residual_table)
    contrib = r.contributions()
    if contrib is not None:
        shown.figure("contributions", lambda: contributions_figure(*contrib, focus=token, layer=layer),
                     key=(token, layer))
        explain("contributions")
    rows = r.norm_rows()
    if rows:
        shown.figure("norm_stats", lambda: norm_stats_figure(rows, token, cap.num_layers), key=(token,))
        explain("norm_stats")
        shown.figure("norm_gain", lambda: gain_heatmap(rows), key=())
        explain("norm_gain")
        shown.table("norm_modules", r.norm_table)


# ---- embeddings ----------------------------------------------------------------------------

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
                         key=(drop, norm, token), on_select=_pick_token_from(K + "fig_pca_embeddings"))
            shown.table("pca_embeddings", lambda: r.projection_table(proj))
    pca_layer = layer if layer in r.residual_layers else (r.residual_layers[-1] if r.residual_layers else None)
    if pca_layer is not None:
        with c2:
            proj_l = r.projection(pca_layer, drop, norm)
            title = f"Hidden states after layer {pca_layer}"
            shown.figure("pca_layer", lambda: pca_figure(proj_l, r.texts, title, token),
                         key=(pca_layer, drop, norm, token), on_select=_pick_token_from(K + "fig_pca_layer"))
            shown.table(f"pca_layer_{pca_layer}", lambda: r.projection_table(proj_l))
    explain("pca")


# ---- logit lens ------------------------------------------------------------------------------

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
        explain("lens_map")
        shown.table("logit_lens", lambda: r.lens_table(window))
        shown.figure("trajectory", lambda: trajectory_figure(r.trajectory(token), r.texts), key=(token,))
        explain("trajectory")
    except LookupError as exc:
        st.info(str(exc))


# ---- guided tour and glossary ------------------------------------------------------------------

def tour_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    step_i = min(max(int(st.session_state.get(TOUR_STEP, 0)), 0), len(TOUR) - 1)
    c1, c2, c3 = st.columns([1, 4, 1])
    if c1.button("← Previous", key=K + "tour_prev", disabled=step_i == 0):
        step_i -= 1
    if c3.button("Next →", key=K + "tour_next", disabled=step_i == len(TOUR) - 1):
        step_i += 1
    st.session_state[TOUR_STEP] = step_i
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
            r.head_summaries()["first_token"], r.attention_layers, cap.kv_head_of, "first_token",
            (facts.get("sink_layer"), facts.get("sink_head")))),
        "contributions": (r.contributions() is not None, lambda: contributions_figure(*r.contributions(), focus=token)),
        "lens": (r.lens_available, lambda: lens_heatmap(r.lens_window(max(0, t - 16), t, k=3), r.texts, t - 1)),
        "trajectory": (r.lens_available, lambda: trajectory_figure(r.trajectory(t - 1), r.texts)),
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


# --------------------------------------------------------------------------------------------
# Downloads and the shareable URL
# --------------------------------------------------------------------------------------------

def downloads(cur: Current, shown: Shown) -> None:
    r = cur.readout
    with st.expander("Download and share"):
        c1, c2 = st.columns([2, 3])
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


def sync_url(cur: Current, layer: int, head: int, token: int, view: str) -> None:
    state = ViewState(model=cur.readout.capture.model_name, prompt=cur.prompt,
                      source=cur.source if cur.source in ("text", "chat", "raw") else "text",
                      layer=layer, head=head, token=token, view=view)
    to_set, to_delete = changed_params(st.query_params.to_dict(), state.to_params())
    for k in to_delete:
        del st.query_params[k]
    if to_set:
        st.query_params.update(to_set)


__all__ = ["capture_controls", "restore_link", "settings_sidebar", "views_fragment"]
