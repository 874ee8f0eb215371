"""Left column, under the chat: follow the conversation, or capture a typed prompt."""
from __future__ import annotations

import hashlib

import streamlit as st

from explorer.model.errors import BadArgument
from explorer.record.prompt_file import MAX_PROMPT_FILE_BYTES, read_prompt_file
from explorer.views.url_state import PARAMS
from pages._internals.link import capture_from_link
from pages._internals.on_screen import CHAT_TURN, on_screen, run_capture
from pages._state import (
    CHAT_MESSAGES,
    CHAT_TEMPLATE,
    FOLLOW,
    LAST_PROMPT_TOKENS,
    LAST_SEQUENCE_LOAD_ID,
    ON_SCREEN,
    PROMPT,
    SEEN_SEQ,
    last_sequence_ids,
)
from pages._state import INTERNALS as K

PROMPT_FILE_SEEN = K + "prompt_file_seen"   # (file_id, error or None) of the text file read last


def _sequence_key(ids) -> str:
    return hashlib.sha1(",".join(map(str, ids)).encode()).hexdigest()


def forget_cleared_chat() -> bool:
    """A cleared chat takes what was derived from it along: its capture and the URL that names it.

    Why here and not in the chat panel: the panel clears its messages and leaves the last turn's
    ids behind; an empty conversation is the one sign both pages share, so the ids are stale then.
    Returns True when the chat is empty (its ids must not be captured).
    """
    if st.session_state.get(CHAT_MESSAGES):
        return False
    st.session_state.pop(SEEN_SEQ, None)   # the same question asked again is captured again
    cur = on_screen()
    if cur is not None and cur.origin == CHAT_TURN:
        del st.session_state[ON_SCREEN]
        for name in PARAMS:
            if name in st.query_params:
                del st.query_params[name]
    return True


def capture_controls(loaded) -> None:
    """Left column, under the chat: follow the conversation, or capture a typed prompt."""
    st.toggle("Capture each chat turn (prompt + answer)", value=True, key=FOLLOW,
              help="After every answer, the whole conversation so far is captured, generated tokens included.")
    ids = None if forget_cleared_chat() else last_sequence_ids()
    if loaded is not None and ids and st.session_state.get(FOLLOW, True):
        key = _sequence_key(ids)
        if st.session_state.get(SEEN_SEQ) != key:
            st.session_state[SEEN_SEQ] = key
            made_by = st.session_state.get(LAST_SEQUENCE_LOAD_ID)
            if made_by is not None and made_by != loaded.load_id:
                st.info("The last answer came from a model that has since been replaced, so it is not "
                        "captured (its token ids belong to the other model). Send a new message to capture one.")
            else:
                try:
                    text = loaded.tokenizer.decode(list(ids))
                except Exception:  # noqa: BLE001 - e.g. the model was unloaded between two lines
                    st.warning("The model changed; send the message again to capture it.")
                else:
                    run_capture(loaded, list(ids), text, "raw", CHAT_TURN, st.session_state.get(LAST_PROMPT_TOKENS))
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
    prompt_file(loaded)
    capture_from_link(loaded)


def prompt_file(loaded) -> None:
    """A long document as the prompt: an uploaded text file, captured once per upload."""
    upload = st.file_uploader(f"Or capture a text file (UTF-8, up to {MAX_PROMPT_FILE_BYTES // 2**20} MiB)",
                              key=K + "prompt_file", max_upload_size=MAX_PROMPT_FILE_BYTES // 2**20,
                              help="The file's text is the prompt, as it is (no chat template). Long documents "
                              "are captured within the memory budget set in the sidebar.")
    if upload is None:
        return
    seen = st.session_state.get(PROMPT_FILE_SEEN)
    if seen is not None and seen[0] == upload.file_id:
        if seen[1]:
            st.error(seen[1])    # stays while the file that caused it is in the box
        return
    if loaded is None:
        st.info("Load a model to capture this file.")
        return
    try:
        text = read_prompt_file(upload.name, upload.getvalue())
    except BadArgument as exc:
        st.session_state[PROMPT_FILE_SEEN] = (upload.file_id, str(exc))
        st.error(str(exc))
        return
    st.session_state[PROMPT_FILE_SEEN] = (upload.file_id, None)
    run_capture(loaded, text, text, "text", f"text file {upload.name}")

