"""Internals: the conversation on the left, what happened inside the model on the right.

Thin page: the chat panel and capture controls run in full reruns (they may run the model); the
views are one fragment that reads a memoised capture, so switching layer, head, token or view
never reruns the model. The parts live in pages/_internals/. The page config (wide layout) comes
from app.py, which every request runs first (scripts/serve.py makes that so from the first one).
"""
from __future__ import annotations

import streamlit as st

from pages._chat_panel import chat_panel
from pages._common import ensure_model, load_error_banner
from pages._internals import capture_controls, open_error_banner, restore_link, settings_sidebar, views_fragment

st.title("Internals")
restore_link()
settings_sidebar()
open_error_banner()
left, right = st.columns([3, 5], gap="medium")   # wide enough for "Clear chat" and "Stop" side by side
with left:
    st.subheader("Conversation")
    loaded = ensure_model()
    load_error_banner()
    chat_panel(loaded, prefix="internals")
    capture_controls(loaded)
with right:
    views_fragment()
