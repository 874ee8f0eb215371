"""The streaming generation panel, shared by the chat page and the internals page.

State per session: `chat_messages` (the history), `last_sequence_ids` (prompt + answer token ids of
the latest turn, which the internals views capture), `last_stats`. The answer is generated on the
model worker (one long-lived thread for every session), which never calls st.*; this script
thread waits in the queue (only behind what runs alone: a load, a comparison), showing its
position, then draws the chunks; its answer is decoded in one batch with other sessions' answers. A rerun, the stop button
or a closed tab cancels the request.
"""
from __future__ import annotations

import threading
import time

import streamlit as st

from explorer.model.errors import user_message
from explorer.model.generation import GenerateOptions, conversation
from explorer.model.loading import LoadedModel
from explorer.model.worker_stream import WorkerStream
from explorer.views.text import show_hidden
from pages._chat_ablation import ablation_offer
from pages._common import model_worker, queue_note, session_alive, session_id
from pages._state import (
    CHAT_MESSAGES,
    LAST_OPTIONS,
    LAST_PROMPT_TOKENS,
    LAST_SEQUENCE_IDS,
    LAST_SEQUENCE_LOAD_ID,
    LAST_STATS,
    PARTIAL_ANSWER,
    PARTIAL_STATS,
    STOP_EVENT,
)


def generation_options(prefix: str) -> GenerateOptions:
    with st.expander("Generation settings", expanded=False):
        max_new = st.slider("max_new_tokens", 1, 1024, 128, key=f"{prefix}_max_new")
        sample = st.toggle("Sampling (off = greedy)", value=False, key=f"{prefix}_sample")
        c1, c2, c3 = st.columns(3)
        temperature = c1.slider("temperature", 0.05, 2.0, 0.7, key=f"{prefix}_temp", disabled=not sample)
        top_p = c2.slider("top-p", 0.05, 1.0, 0.9, key=f"{prefix}_top_p", disabled=not sample)
        top_k = c3.number_input("top-k", 0, 1000, 50, key=f"{prefix}_top_k", disabled=not sample)
        # 1.1 by default here: greedy decoding of the small embedded model in NF4 often loops within a
        # few sentences at 1.0 (seen on the first question a newcomer asks); the API and the CLI keep
        # 1.0, the model's own greedy output
        rep = st.slider("repetition penalty", 1.0, 2.0, 1.1, step=0.05, key=f"{prefix}_rep",
                        help="Lowers the score of tokens already in the text; 1.0 = off. It changes which "
                        "answer is chosen, not what a capture records about it.")
        timeout = st.number_input("timeout per token (s)", 5, 600, 120, key=f"{prefix}_timeout")
    return GenerateOptions(max_new_tokens=int(max_new), do_sample=sample, temperature=float(temperature),
                           top_p=float(top_p), top_k=int(top_k), repetition_penalty=float(rep),
                           timeout_s=float(timeout))


def _stats_line(stats: dict) -> str:
    """How long the answer waited and how long it ran, told apart: the first token is counted
    from when its decoding began, the wait from when it was sent. A speed shared with other
    sessions' answers says so, since that is why it swings."""
    ttft = f"{stats['ttft']:.2f} s" if stats.get("ttft") is not None else "–"
    about = "≈" if stats.get("approx") else ""
    parts = [f"waited {stats['queued']:.1f} s"] if stats.get("queued") is not None and stats["queued"] >= 0.05 else []
    parts += [f"first token {ttft}", f"{about}{stats['tps']:.1f} tokens/s",
              f"{about}{stats['new_tokens']} new tokens ({stats['prompt_tokens']} prompt)"]
    shared = stats.get("shared") or 0
    if shared:
        parts.append(f"decoded together with {shared} other answer{'s' if shared > 1 else ''}")
    if stats.get("stopped"):
        parts.append("stopped")
    return " · ".join(parts)


def _partial_stats(loaded: LoadedModel | None, text: str) -> dict | None:
    """Speed of an answer cut short by a rerun (Stop, a widget): the stream's own result never
    arrives then, so count the text that did (re-tokenised, hence approximate)."""
    progress = st.session_state.pop(PARTIAL_STATS, None)
    if not progress or progress.get("first") is None:
        return None
    new = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) if loaded is not None else 0
    seconds = max(progress["last"] - progress["start"], 1e-6)
    return dict(ttft=progress["first"] - progress["start"], tps=new / seconds, new_tokens=new,
                prompt_tokens=progress["prompt_tokens"], stopped=True, approx=True)


def _finish_interrupted_turn(loaded: LoadedModel | None) -> None:
    """A rerun (stop button, widget change) interrupts write_stream; keep what had arrived, and its speed."""
    partial = st.session_state.pop(PARTIAL_ANSWER, None)
    if partial is not None:
        st.session_state[CHAT_MESSAGES].append({"role": "assistant", "content": partial + " ⏹"})
        event = st.session_state.get(STOP_EVENT)
        if event is not None:
            event.set()
        stats = _partial_stats(loaded, partial)
        if stats is not None:
            st.session_state[LAST_STATS] = stats


def _show(text: str) -> None:
    """A chat turn as text, not markdown (model output is never rendered as HTML), its hidden
    characters (bidi overrides, zero-width spaces) shown as ⟨U+XXXX⟩ instead of applied."""
    st.text(show_hidden(text))


def chat_panel(loaded: LoadedModel | None, prefix: str = "chat") -> None:
    """Settings and buttons, then top to bottom: the turns, the stats line, the input. Turns and
    stats are drawn into slots made before the input, so a new turn never lands below it."""
    st.session_state.setdefault(CHAT_MESSAGES, [])
    _finish_interrupted_turn(loaded)
    system = st.text_area("System prompt", value="", key=f"{prefix}_system", height=68,
                          placeholder="Optional: how the assistant should behave")
    options = generation_options(prefix)
    cols = st.columns(2)
    if cols[0].button("Clear chat", key=f"{prefix}_clear", width="stretch"):
        st.session_state[CHAT_MESSAGES] = []
        st.session_state.pop(LAST_STATS, None)
    if cols[1].button("Stop", key=f"{prefix}_stop", width="stretch"):
        event = st.session_state.get(STOP_EVENT)
        if event is not None:
            event.set()
    turns = st.container(key=f"{prefix}_turns")
    stats_slot = st.empty()
    prompt = st.chat_input("Ask the model…", key=f"{prefix}_input", disabled=loaded is None)
    with turns:
        for message in st.session_state[CHAT_MESSAGES]:
            with st.chat_message(message["role"]):
                _show(message["content"])
    if prompt is None:
        if LAST_STATS in st.session_state:
            stats_slot.caption(_stats_line(st.session_state[LAST_STATS]))
        with turns:
            ablation_offer(loaded, prefix, options)  # "Answer again with heads … off" (pages/_chat_ablation.py)
        return
    if loaded is None:
        stats_slot.error("No model is loaded.")
        return
    with turns:
        _answer(loaded, prompt, system, options, stats_slot)
        ablation_offer(loaded, prefix, options)


def _answer(loaded: LoadedModel, prompt: str, system: str, options: GenerateOptions, stats_slot) -> None:
    history = list(st.session_state[CHAT_MESSAGES])
    with st.chat_message("user"):
        _show(prompt)
    event = threading.Event()
    st.session_state[STOP_EVENT] = event
    alive = session_alive()
    stream = WorkerStream(model_worker(), conversation(prompt, system, history), options, session_id(), event,
                          load_id=loaded.load_id)   # the model this page shows, or ModelReplaced
    waiting = st.empty()
    try:
        prepared = stream.wait_started(on_wait=lambda n: waiting.info(queue_note(n)) if n else None, alive=alive)
    except Exception as exc:  # noqa: BLE001 - GenerationError, ModelReplaced, a worker error, or the unexpected
        waiting.empty()
        st.error(user_message(exc))
        return
    waiting.empty()
    st.session_state[CHAT_MESSAGES].append({"role": "user", "content": prompt})
    for notice in prepared.notices:
        st.info(notice)
    st.session_state[PARTIAL_ANSWER] = ""
    progress = st.session_state[PARTIAL_STATS] = dict(start=time.perf_counter(), first=None, last=None,
                                                      prompt_tokens=int(prepared.input_ids.shape[1]))

    def chunks():
        for chunk in stream.iterate(alive):
            now = time.perf_counter()
            if chunk and progress["first"] is None:
                progress["first"] = now
            progress["last"] = now
            st.session_state[PARTIAL_ANSWER] += chunk
            yield show_hidden(chunk)

    with st.chat_message("assistant"):
        try:
            st.write_stream(chunks())
        except Exception as exc:  # noqa: BLE001 - GenerationError, ModelReplaced, a worker error, or the unexpected
            st.session_state.pop(PARTIAL_ANSWER, None)
            st.session_state.pop(PARTIAL_STATS, None)
            st.error(user_message(exc))
            return
        finally:
            if stream.result is None:    # rerun, stop or closed tab: the worker stops generating
                stream.cancel()
    st.session_state.pop(PARTIAL_ANSWER, None)
    st.session_state.pop(PARTIAL_STATS, None)
    result = stream.result
    st.session_state[CHAT_MESSAGES].append({"role": "assistant", "content": result.text})
    st.session_state[LAST_OPTIONS] = options          # the lens says when these changed the chosen token
    st.session_state[LAST_SEQUENCE_IDS] = result.sequence_ids
    st.session_state[LAST_SEQUENCE_LOAD_ID] = loaded.load_id  # which model these ids belong to
    st.session_state[LAST_PROMPT_TOKENS] = result.prompt_tokens
    # the streamer flushes text at word boundaries: a script without spaces (Hebrew, Thai) arrives in one
    # chunk at the end, and the decode rate after the "first token" would divide by ~0 s
    decode = result.seconds - (result.time_to_first_token or 0.0)
    tps = result.tokens_per_second if decode > 0.2 * result.seconds else result.new_tokens / max(result.seconds, 1e-6)
    st.session_state[LAST_STATS] = dict(ttft=result.time_to_first_token, tps=tps,
                                       new_tokens=result.new_tokens, prompt_tokens=result.prompt_tokens,
                                       stopped=result.stopped, queued=result.queued_seconds,
                                       shared=result.shared_with)
    stats_slot.caption(_stats_line(st.session_state[LAST_STATS]))
