"""Names of the st.session_state entries that more than one page module reads or writes.

Why constants: a typo in a bare string key fails silently (a fresh default instead of the value),
so every key two modules share is spelled once, here. Keys private to one module (its own widget
keys) stay in that module.
"""
from __future__ import annotations

import streamlit as st

# ---- the resident model (pages/_common.py, pages/chat.py) -----------------------------------
LOAD_ERROR = "load_error"              # str: why the last load failed, shown in the main area until dismissed
AUTOLOAD_TRIED = "autoload_tried"      # bool: the embedded default was tried once this session

# ---- the compare page (pages/compare.py, pages/_compare_job.py) -------------------------------
COMPARE_INPUTS = "compare_inputs"      # dict: the form's last values, restored after leaving the page
COMPARE_JOB = "compare_job"            # pages._compare_job.CompareJob: this session's running comparison
COMPARE_OWNER = "compare_owner"        # str: this session's opaque id for the process-wide compare lock
COMPARE_RESULT = "compare_result"      # explorer.compare.run.ComparisonResult: this session's last result (Internals reads its drift)

# ---- the chat panel (pages/_chat_panel.py, read by the internals page) -------------------------
CHAT_MESSAGES = "chat_messages"        # list[{"role", "content"}]: the conversation
LAST_SEQUENCE_IDS = "last_sequence_ids"  # list[int]: prompt + answer ids of the latest turn
LAST_SEQUENCE_LOAD_ID = "last_sequence_load_id"  # int: LoadedModel.load_id that made those ids
LAST_STATS = "last_stats"              # dict: speed of the latest turn
STOP_EVENT = "stop_event"              # threading.Event that stops the running answer
PARTIAL_ANSWER = "partial_answer"      # str: what arrived before a rerun interrupted the stream
PARTIAL_STATS = "partial_stats"        # dict: start/first/last chunk times of the running answer
LAST_PROMPT_TOKENS = "last_prompt_tokens"  # int: how many of last_sequence_ids are the prompt
LAST_OPTIONS = "last_generate_options"  # GenerateOptions that chose the latest answer (the lens says when they matter)

# ---- the internals page (pages/_internals/*) ---------------------------------------------------
INTERNALS = "internals_"               # prefix of every internals key
ON_SCREEN = INTERNALS + "on_screen"    # pages._internals.on_screen.OnScreen: the capture on screen
PENDING = INTERNALS + "pending"        # explorer.views.url_state.ViewState from a shared link
LINK_READ = INTERNALS + "link_read"    # bool: the URL was read once this session
SEEN_SEQ = INTERNALS + "seen_sequence" # sha1 of the chat turn captured last
UPLOAD_SEEN = INTERNALS + "upload_seen"  # file_id of the capture file opened last
OPEN_ERROR = INTERNALS + "open_error"  # str: why the capture file last uploaded could not be opened
LAYER, HEAD, TOKEN, VIEW = INTERNALS + "layer", INTERNALS + "head", INTERNALS + "token", INTERNALS + "view"
TOUR_STEP = INTERNALS + "tour_step"
PROMPT, CHAT_TEMPLATE = INTERNALS + "prompt", INTERNALS + "chat_template"
FOLLOW, BUDGET = INTERNALS + "follow_chat", INTERNALS + "budget_mib"
COMPONENTS = INTERNALS + "record_components"   # record per-head components (the Attribution view) with each capture
VIEW_WIDGET = INTERNALS + "w_"         # prefix of per-view widgets, cleared when a new capture arrives


def last_sequence_ids() -> list[int] | None:
    """Prompt + answer token ids of the latest chat turn, or None before the first answer."""
    ids = st.session_state.get(LAST_SEQUENCE_IDS)
    return list(ids) if ids else None
