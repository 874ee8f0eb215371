"""The chat panel's "Answer again with heads 14.2 and 20.5 off": the latest question answered once
more with the Intervene view's interventions applied, shown beside the plain answer.

Zero or scale head ablations, neuron ablations and skipped blocks act on one row of a batch
(explorer/record/row_interventions.py), so the answer with them joins the worker's shared decode
batch as a row of its own: other sessions' answers keep streaming in the same forwards, and their
rows never see the hooks (a teacher's demonstration does not pause the class). A mean ablation or
a patch hooks every row of every forward, so that answer runs as one model-worker call of its own;
other sessions' answers wait at their next step until it returns, and `intervene` has removed its
hooks (in `finally`) by then. Either way it is cancelled when the tab closes.

Greedy, with the plain answer's other options (length, repetition penalty): sampled answers
would differ with or without the interventions. When the plain answer was sampled, the same
request also answers greedily without them, and that answer is shown as the plain one.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from explorer.analyse.intervention_effects import AnswerPair, answer_with
from explorer.model.errors import user_message
from explorer.model.generation import GenerateOptions, conversation
from explorer.model.loading import LoadedModel
from explorer.record.interventions import BadIntervention, Intervention, parse, to_short
from explorer.record.row_interventions import RowInterventions, row_safe
from explorer.views.intervene_data import spoken
from explorer.views.text import show_hidden
from pages._common import decode_on_worker, run_on_model
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
                pair = answers_with(messages, specs, used, used.do_sample, load_id=loaded.load_id)
            st.session_state[ANSWER] = (key, pair)
        except Exception as exc:  # noqa: BLE001 - a message under the chat; the model stays usable
            st.error(user_message(exc))
    done = st.session_state.get(ANSWER)
    if done and done[0] == key:
        _side_by_side(plain, done[1], label)


def answers_with(messages: list[dict], specs: list[Intervention], options: GenerateOptions, plain_too: bool,
                 load_id: int | None = -1) -> AnswerPair:
    """Greedy answers with `specs` (and without, if `plain_too`), from the worker: as rows of its
    shared batch when the specs are row-local, else as one call of their own (see the docstring).
    load_id: the model the page showed (-1: whatever is resident)."""
    if not row_safe(specs):
        return run_on_model(lambda m: answer_with(m, messages, specs, options, plain_too=plain_too), load_id=load_id)
    greedy = replace(options, do_sample=False)
    edits = ([None] if plain_too else []) + [RowInterventions(tuple(specs))]
    results = decode_on_worker([messages] * len(edits), greedy, edits, load_id=load_id)
    return AnswerPair(to_short(specs), results[-1], results[0] if plain_too else None)


def _side_by_side(plain: str, pair: AnswerPair, label: str) -> None:
    with st.container(border=True, key="chat_ablation_pair"):
        left, right = st.columns(2)
        left.markdown("**Plain answer**" + (" (greedy; the chat's was sampled)" if pair.plain is not None else ""))
        left.text(show_hidden(pair.plain.text if pair.plain is not None else plain))
        right.markdown(f"**With {label}**")
        right.text(show_hidden(pair.changed.text))
