"""The sidebar: the capture's memory budget, and opening a saved capture file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import streamlit as st

from explorer.analyse.capture_bundle import open_with_results
from explorer.model.errors import user_message
from explorer.views.readout import Readout
from explorer.views.teaching import escape_markdown
from pages._internals.on_screen import OnScreen, set_on_screen
from pages._state import BUDGET, COMPONENTS, OPEN_ERROR, PENDING, UPLOAD_SEEN
from pages._state import INTERNALS as K


def settings_sidebar() -> None:
    with st.sidebar:
        st.subheader("Capture")
        st.number_input("Memory budget (MiB, 0 = half the free RAM)", min_value=0, max_value=1 << 20, value=0,
                        step=64, key=BUDGET,
                        help="Over budget, the capture keeps evenly spaced layers only, and says so.")
        # Kept on the GPU while they fit, they cost little there too (bench/results/routes_cuda.md).
        st.toggle("Record per-head components (Attribution view)", value=True, key=COMPONENTS,
                  help="Each head's and MLP's output, for logit attribution and routes. Switch off to "
                  "keep captures of long prompts smaller.")
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
        cap, results = open_with_results(path)
    except Exception as exc:   # noqa: BLE001 - any unreadable file becomes a message
        message = user_message(exc).replace(Path(path).name, name)
        st.session_state[OPEN_ERROR] = f"Could not open {escape_markdown(name)}: {escape_markdown(message)}"
        return
    finally:
        os.unlink(path)
    st.session_state.pop(PENDING, None)
    st.session_state.pop(OPEN_ERROR, None)
    # a file's tensors are on the CPU and no model is involved: its views compute on the page's thread
    set_on_screen(OnScreen(Readout(cap, results=results), None, "file", f"file {name}"))


def open_error_banner() -> None:
    """A capture file that could not be opened, said in the main area until dismissed."""
    message = st.session_state.get(OPEN_ERROR)
    if message:
        st.error(message, icon="⚠️")
        if st.button("Dismiss", key=OPEN_ERROR + "_dismiss"):
            st.session_state.pop(OPEN_ERROR, None)
            st.rerun()

