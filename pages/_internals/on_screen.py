"""The capture on screen (`OnScreen`) and the one place the model runs for the internals page."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
import streamlit as st

from explorer.model.errors import ModelReplaced, clean_text, user_message
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, PromptTooLongError
from explorer.record.capture_batch import submit_capture
from explorer.record.intervention_hooks import capture_under
from explorer.views.readout import Readout
from explorer.views.url_state import ViewState
from pages._common import model_worker, run_on_model, session_id, worker_runner
from pages._state import BUDGET, COMPONENTS, HEAD, LAYER, ON_SCREEN, PENDING, TOKEN, TOUR_STEP, VIEW_WIDGET

CHAT_TURN = "chat turn"   # OnScreen.origin of a capture that follows the chat (cleared with it)


@dataclass
class OnScreen:
    """The capture on screen and what produced it (for the shareable link)."""
    readout: Readout
    display_text: str | None  # the prompt as the user wrote it (the link's text); None: opened from a file
    source: str               # "text" | "chat" | "raw" | "file"
    origin: str               # shown to the user, e.g. "typed prompt", "chat turn", "file x.safetensors"
    answer_start: int | None = None   # first generated token of a chat turn; None: all prompt
    figures: OrderedDict = field(default_factory=OrderedDict, repr=False)   # key -> go.Figure, LRU

    def figure(self, key: tuple, build: Callable[[], go.Figure], keep: int = 48) -> go.Figure:
        """A figure built once per capture and arguments: a switch back to a layer seen before, or
        a figure the switch does not change, costs only its serialisation."""
        if key in self.figures:
            self.figures.move_to_end(key)
            return self.figures[key]
        fig = self.figures[key] = build()
        while len(self.figures) > keep:
            self.figures.popitem(last=False)
        return fig


def on_screen() -> OnScreen | None:
    return st.session_state.get(ON_SCREEN)


def capture_options(model_name: str, precision: str | None = None) -> CaptureOptions:
    mib = int(st.session_state.get(BUDGET) or 0)
    components = {"components"} if st.session_state.get(COMPONENTS, True) else set()
    return CaptureOptions(parts=DEFAULT_PARTS | components, memory_budget_bytes=mib * 2**20 if mib > 0 else None,
                          model_name=model_name, precision=precision)


def run_capture(loaded, prompt, text: str, source: str, origin: str, answer_start: int | None = None,
                specs: Sequence = ()) -> bool:
    """The one place the model runs. Returns False (with a message) when the prompt can't be captured.
    `specs`: interventions to capture under (a shared link of such a capture); its notes say which."""
    options = capture_options(loaded.name, loaded.precision)   # read here: session state is this thread's

    def under(m):
        return capture_under(m.model, m.tokenizer, prompt, options, specs)
    try:
        loaded.ensure_current()
        with st.status(f"Capturing the {origin} with {loaded.name} ({loaded.precision})…", expanded=False) as status:
            # a plain capture may share its forward with other sessions' captures waiting at the same moment
            shared = None if specs else submit_capture(model_worker(), prompt, options, session_id(),
                                                       load_id=loaded.load_id)
            cap = run_on_model(under, load_id=loaded.load_id, request=shared)
            loaded.ensure_current()  # replaced meanwhile: the capture belongs to a model that is gone
            status.update(label=f"Captured {cap.num_tokens} tokens × {cap.num_layers} layers", state="complete")
    except ModelReplaced:
        st.warning("The model changed while capturing; run the capture again.")
        return False
    except (PromptTooLongError, ValueError) as exc:
        st.error(clean_text(str(exc)))
        return False
    except Exception as exc:  # noqa: BLE001 - any failure is a message; the page keeps drawing
        st.error(user_message(exc))
        return False
    # every view computed from this capture (lens, summaries, attribution, the file's lens) runs on the worker
    readout = Readout(cap, loaded.model, loaded.tokenizer, run=worker_runner())
    set_on_screen(OnScreen(readout, text, source, origin, answer_start))
    return True


def set_on_screen(cur: OnScreen) -> None:
    """Show a new capture. Layer and head come from a pending link, else stay where the user was
    (clamped to what this capture has: following a conversation keeps the head under study); the
    focus goes to the link's token, else the last one."""
    st.session_state[ON_SCREEN] = cur
    r = cur.readout
    pending: ViewState | None = st.session_state.pop(PENDING, None)
    kept = ViewState(layer=st.session_state.get(LAYER), head=st.session_state.get(HEAD))
    state = (pending or kept).clamp(r.view_layers, r.capture.num_heads, r.num_tokens)
    layers = r.view_layers
    st.session_state[LAYER] = state.layer if state.layer is not None else layers[len(layers) // 2]
    st.session_state[HEAD] = state.head if state.head is not None else 0
    st.session_state[TOKEN] = state.token if state.token is not None else r.num_tokens - 1
    st.session_state[TOUR_STEP] = 0
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(VIEW_WIDGET):   # per-view widgets (windows, toggles)
            del st.session_state[key]

