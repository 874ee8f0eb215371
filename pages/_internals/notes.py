"""Notes beside the Internals numbers when a setting outside the view changed them: the chat's
sampling settings (against the logit lens) and the precision (against the reference precision).
The sentences come from explorer/views/setting_notes.py; this module reads session state."""
from __future__ import annotations

import streamlit as st

from explorer.model.precisions import LOAD_PRECISIONS
from explorer.views.setting_notes import REFERENCE, answer_choice_note, precision_note
from pages._common import current_model
from pages._internals.on_screen import CHAT_TURN
from pages._state import CHAT_MESSAGES, COMPARE_INPUTS, COMPARE_RESULT, LAST_OPTIONS


def answer_settings_note(origin: str) -> None:
    """Under the lens: say so when the captured answer was not chosen greedily."""
    if origin != CHAT_TURN or not st.session_state.get(CHAT_MESSAGES):
        return
    note = answer_choice_note(st.session_state.get(LAST_OPTIONS))
    if note:
        st.caption(":material/info: " + note)


def precision_drift_note(cur) -> None:
    """Next to the capture's caption: how far this precision drifts from the reference, or a way to see it."""
    cap = cur.readout.capture
    model_name, precision = cap.model_name, cap.precision
    result = st.session_state.get(COMPARE_RESULT)
    said = precision_note(model_name, precision, result.runs if result is not None else ())
    if said is None:
        return
    text, measured = said
    if measured:
        st.caption(":material/info: " + text)
        return
    cols = st.columns([2, 1], vertical_alignment="center")   # the button reads in full at 1280 px
    cols[0].caption(":material/info: " + text)
    if cols[1].button(f"Compare vs {REFERENCE}", key="internals_compare_precision",
                      help=f"Opens Compare with this model in {precision} and {REFERENCE} on this prompt; "
                           "you start it there (a comparison unloads the chat model while it runs)."):
        prefill_compare(precision, compared_prompt(cur))
        st.switch_page("pages/compare.py")


def compared_prompt(cur) -> str:
    """The prompt Compare should run: the user's last message for a chat turn (Compare applies the chat
    template itself), else the captured text."""
    users = [m["content"] for m in st.session_state.get(CHAT_MESSAGES, []) if m.get("role") == "user"]
    return users[-1] if cur.origin == CHAT_TURN and users else "".join(cur.readout.texts)


def prefill_compare(precision: str, prompt_text: str) -> None:
    """Compare's form, filled for the loaded model in this precision and the reference, on this prompt."""
    loaded = current_model()                       # the resident model's source: what Compare will load
    kept = dict(st.session_state.get(COMPARE_INPUTS, {}))
    if loaded is not None and loaded.source_kind == "embedded":
        kept.update(cmp_models=["embedded"], cmp_extra="")
    elif loaded is not None:
        kept.update(cmp_models=[], cmp_extra=str(loaded.config.source))
    kept.update(cmp_precisions=[p for p in (precision, REFERENCE) if p in LOAD_PRECISIONS], cmp_drift=True)
    if prompt_text.strip():
        kept["cmp_prompts"] = " ".join(prompt_text.split())[:500]
    st.session_state[COMPARE_INPUTS] = kept
    for key in kept:                               # the form restores from COMPARE_INPUTS only for absent keys
        st.session_state.pop(key, None)
