"""The chat panel's "Answer again with heads 14.2 and 20.5 off": the latest question answered once
more with the Intervene view's interventions applied, shown beside the plain answer.

Why a request of its own and not a row of the shared decode batch: the hooks act on every row of
every forward while they are on. The answer runs through run_on_model as one model-worker call;
the worker runs one call at a time, between two decode steps of its shared batch, and the call
decodes its own rows in a batch of its own (generation.generate). Other sessions' answers wait
at their next step until it returns, and `intervene` has removed its hooks (in `finally`) by
then, so they never run under this session's interventions. The call is cancelled like any
other when the tab closes or the page reruns.

Greedy, with the plain answer's other options (length, repetition penalty): sampled answers
would differ with or without the interventions. When the plain answer was sampled, the same call
also answers greedily without them, and that answer is shown as the plain one.
"""
from __future__ import annotations

import streamlit as st

from explorer.analyse.intervention_effects import AnswerPair, answer_with
from explorer.model.errors import user_message
from explorer.model.generation import GenerateOptions, conversation
from explorer.model.loading import LoadedModel
from explorer.record.interventions import BadIntervention, Intervention, parse, to_short
from explorer.views.intervene_data import spoken
from explorer.views.text import show_hidden
from pages._common import run_on_model
from pages._state import CHAT_MESSAGES, LAST_OPTIONS, LAST_SEQUENCE_LOAD_ID

ACTIVE = "chat_ablation_active"   # str: short form of the Intervene view's interventions ("" = none)
ANSWER = "chat_ablation_answer"   # (turn key, AnswerPair): the latest answer with them


def set_active(specs: list[Intervention]) -> bool:
    """The Intervene view says which interventions are on; True when that changed (the chat
    panel, drawn outside the views fragment, then needs a full rerun to offer them)."""
    short = to_short(specs)
    changed = st.session_state.get(ACTIVE, "") != short
    st.session_state[ACTIVE] = short
    return changed


def active_specs() -> list[Intervention]:
    try:
        return parse(st.session_state.get(ACTIVE, ""))
    except BadIntervention:
        return []


def _last_turn(messages: list[dict]) -> tuple[list[dict], str, str] | None:
    """(history before it, question, plain answer) of the latest finished turn, or None."""
    if len(messages) < 2 or messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        return None
    return messages[:-2], messages[-2]["content"], messages[-1]["content"]


def ablation_offer(loaded: LoadedModel | None, prefix: str, options: GenerateOptions) -> None:
    """Below the turns: the button, then the two answers side by side once it ran."""
    specs = active_specs()
    turn = _last_turn(st.session_state.get(CHAT_MESSAGES, []))
    if loaded is None or not specs or turn is None or st.session_state.get(LAST_SEQUENCE_LOAD_ID) != loaded.load_id:
        return                   # nothing to compare with, or the plain answer came from another model
    history, question, plain = turn
    system = st.session_state.get(f"{prefix}_system", "")
    used = st.session_state.get(LAST_OPTIONS) or options
    key = (len(st.session_state[CHAT_MESSAGES]), question, system, to_short(specs), loaded.load_id)
    label = spoken(specs)
    if st.button(f"Answer again with {label}", key=f"{prefix}_ablate_answer", icon=":material/science:",
                 help="The latest question once more, greedily, with the Intervene view's interventions on; "
                      "shown beside the plain answer."):
        messages = conversation(question, system, history)
        try:
            with st.spinner(f"Answering with {label}…"):
                pair = run_on_model(lambda m: answer_with(m, messages, specs, used, plain_too=used.do_sample),
                                    load_id=loaded.load_id)
            st.session_state[ANSWER] = (key, pair)
        except Exception as exc:  # noqa: BLE001 - a message under the chat; the model stays usable
            st.error(user_message(exc))
    done = st.session_state.get(ANSWER)
    if done and done[0] == key:
        _side_by_side(plain, done[1], label)


def _side_by_side(plain: str, pair: AnswerPair, label: str) -> None:
    with st.container(border=True, key="chat_ablation_pair"):
        left, right = st.columns(2)
        left.markdown("**Plain answer**" + (" (greedy; the chat's was sampled)" if pair.plain is not None else ""))
        left.text(show_hidden(pair.plain.text if pair.plain is not None else plain))
        right.markdown(f"**With {label}**")
        right.text(show_hidden(pair.changed.text))
