"""A shared link: read once per session, and its prompt captured when the right model is loaded."""
from __future__ import annotations

import streamlit as st

from explorer.views.teaching import escape_markdown
from explorer.views.url_state import ViewState
from pages._internals.current import current, run_capture
from pages._state import CHAT_TEMPLATE, LINK_READ, PENDING, PROMPT, VIEW


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


def capture_from_link(loaded) -> None:
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

