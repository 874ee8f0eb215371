"""A shared link: read once per session, and its prompt captured when the right model is loaded."""
from __future__ import annotations

import dataclasses

import streamlit as st

from explorer.model.precisions import LOAD_PRECISIONS as PRECISIONS
from explorer.record.interventions import to_short
from explorer.views.teaching import escape_markdown
from explorer.views.url_state import ViewState, link_mismatch
from pages._common import load_into_registry
from pages._internals.intervene import linked_capture_interventions
from pages._internals.on_screen import on_screen, run_capture
from pages._state import CHAT_TEMPLATE, LINK_READ, PENDING, PROMPT, VIEW
from pages._state import INTERNALS as K


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
    if pending is None or not pending.prompt or on_screen() is not None:
        return
    if loaded is None:
        st.info("This link holds a prompt; load a model to capture it.")
        return
    mismatch = link_mismatch(pending, loaded.name, loaded.precision)
    if mismatch == "model":
        st.info(f"This link was made with {escape_markdown(pending.model)}; {escape_markdown(loaded.name)} is "
                "loaded. Press “Capture this prompt” to run the prompt on it.")
        return
    if mismatch == "precision":
        offer_link_precision(loaded, pending.precision)
        return
    prompt = [{"role": "user", "content": pending.prompt}] if pending.source == "chat" else pending.prompt
    if pending.source == "raw":
        prompt = loaded.tokenizer(pending.prompt, add_special_tokens=False)["input_ids"]
    specs = linked_capture_interventions()      # the shared capture was taken under these: so is this one
    run_capture(loaded, prompt, pending.prompt, pending.source, "shared link" + (f" with {to_short(specs)}" if specs else ""),
                specs=specs)



def offer_link_precision(loaded, precision: str) -> None:
    """The link's model is loaded in another precision: say so, and offer to load the link's one.

    Why not capture anyway: nf4 and bf16 weights give different attention and residuals, so the
    view would not be the one that was shared. “Capture this prompt” still runs it as loaded.
    """
    st.warning(f"This link was captured with {escape_markdown(loaded.name)} in **{escape_markdown(precision)}**; "
               f"it is loaded in **{escape_markdown(loaded.precision)}** now, so its numbers would differ. "
               "Press “Capture this prompt” to run the prompt as loaded.")
    if precision not in PRECISIONS:
        return
    if st.button(f"Load {loaded.name} in {precision}", key=K + "load_link_precision", icon=":material/download:"):
        if load_into_registry(dataclasses.replace(loaded.config, precision=precision)) is not None:
            st.rerun()
