"""Streamlit glue shared by the pages: the one model worker, the session's heartbeat, the token,
operator switches.

The model worker lives in `st.cache_resource`, so every session and rerun shares one model and
one thread that runs it; nothing per-request is kept on it. Per-session state (chat, captures)
lives in `st.session_state`. Every model call of a page goes through `run_on_model` (or a
WorkerStream), tagged with the browser session's id: the worker queues sessions fairly, and a
request whose session closed is cancelled. Every failure is a typed error shown as
`user_message(exc)` in the main area.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import streamlit as st

from explorer.model.decode_batch import RowEdit
from explorer.model.errors import Secret, env_token, user_message
from explorer.model.generation_types import GenerateOptions, GenerationResult
from explorer.model.loading import LoadConfig, LoadedModel, ModelRegistry, memory_snapshot
from explorer.model.switches import autoload_enabled, operator_switches, worker_status_file
from explorer.model.worker import ModelWorker
from explorer.model.worker_request import Request
from explorer.model.worker_stream import WorkerStream, gather
from explorer.views.units import fmt_bytes
from pages._state import AUTOLOAD_TRIED, LOAD_ERROR


@st.cache_resource(show_spinner=False)
def model_worker() -> ModelWorker:
    """The process's one model worker. EXPLORER_WORKER_STATUS names a JSON file it keeps current
    (busy, queued, running session), which tests and operators can read."""
    return ModelWorker(status_file=worker_status_file())


def registry() -> ModelRegistry:
    """The worker's registry, for reading `current`. Changes go through model_worker()."""
    return model_worker().registry


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "default"


def session_alive() -> Callable[[], bool]:
    """A heartbeat for waits on the model worker: false once this browser session has gone (tab
    closed, session expired), so its queued or running requests are cancelled within a poll."""
    sid = session_id()

    def alive() -> bool:
        try:
            from streamlit.runtime import Runtime

            if not Runtime.exists():
                return True                  # AppTest and bare scripts: no server, no sessions
            return Runtime.instance().get_client(sid) is not None
        except Exception:  # noqa: BLE001 - never cancel because the check itself failed
            return True

    return alive


def queue_note(ahead: int) -> str:
    return f"Queued: {ahead} ahead. Other sessions are using the model…" if ahead else "Starting…"


def run_on_model(fn: Callable[[LoadedModel], Any], progress: Callable[[str], None] | None = None,
                 load_id: int | None = -1, request: Request | None = None) -> Any:
    """Run `fn(loaded)` on the model worker for this session and wait, showing the queue position.
    `load_id`: the LoadedModel.load_id the page showed (-1: whatever is resident now).
    Raises what `fn` raised, or the worker's own typed errors (ModelReplaced, NoModelLoaded,
    RequestCancelled): the caller shows `user_message(exc)`. `request`: one already queued (a
    shareable capture, explorer.record.capture_batch.submit_capture) to wait for instead of `fn`."""
    note = st.empty()
    try:
        if request is None:
            request = model_worker().submit(lambda loaded, _req: fn(loaded), session_id(), load_id=load_id)
        return request.wait(progress=progress, alive=session_alive(),
                            on_wait=lambda n: note.caption(queue_note(n)) if n else None)
    finally:
        note.empty()


def decode_on_worker(conversations: list, options: GenerateOptions, edits: list[RowEdit | None],
                     load_id: int | None = -1) -> list[GenerationResult]:
    """Answers decoded as rows of the worker's shared batch, beside other sessions' answers, and read
    to their end (not streamed to the page). `edits`: per answer, hooks on its row alone (an answer
    with heads off, explorer/record/row_interventions.py); other sessions' rows never see them."""
    worker, session = model_worker(), session_id()
    streams = [WorkerStream(worker, messages, options, session, load_id=load_id, edit=edit)
               for messages, edit in zip(conversations, edits, strict=True)]
    return gather(streams, session_alive())


def worker_runner() -> Callable[[Callable[[], Any]], Any]:
    """A function that runs `fn()` on the model worker for this session and returns its result:
    the way a page runs any computation on the model or on a capture's tensors outside the model
    call itself (the logit lens, head summaries, attribution, a capture file's lens).

    Why not run_on_model: this one shows nothing and reads no session state when called, so it
    also works from a download's data callback, outside the script run. It runs whatever model is
    resident (or none): the computation holds what it needs. Called on the worker thread itself
    (a computation that asks for another), it runs in place instead of waiting on itself."""
    worker, session, alive = model_worker(), session_id(), session_alive()

    def run(fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is worker.thread:
            return fn()
        request = worker.submit(lambda _loaded, _req: fn(), session, kind="call", load_id=None,
                                needs_model=False)
        return request.wait(alive=alive)

    return run


def current_model() -> LoadedModel | None:
    return registry().current


def hf_secret() -> Secret | None:
    """The token from the environment or Streamlit secrets, wrapped so it is never displayed or stored
    in the clear (making the Secret also registers it with the message scrubber)."""
    token = env_token()
    if token:
        return token
    try:
        value = st.secrets.get("HF_TOKEN")
    except Exception:  # noqa: BLE001 - no secrets file is the normal case
        return None
    return Secret(value) if value else None


def hf_token() -> str | None:
    secret = hf_secret()
    return secret.reveal() if secret else None


def show_error(message: str) -> None:
    """An error where the user is looking: the main area, kept until dismissed."""
    st.session_state[LOAD_ERROR] = message


def load_error_banner() -> None:
    """The last load error, in the main area, until the user dismisses it (or a load succeeds),
    with what is resident now.

    Why here and sticky: a sidebar message below the fold is missed, and one that vanishes on
    the next click is never read; "Still loaded" answers the first question after a failure."""
    message = st.session_state.get(LOAD_ERROR)
    if not message:
        return
    with st.container(border=True, key="load_error_box"):
        st.error(f"**The model did not load.** {message}", icon="⚠️")
        resident = current_model()
        st.caption(f"Still loaded: {resident.name} ({resident.precision})." if resident is not None
                   else "No model is loaded now.")
        # on its own line, as wide as its word: in a fifth of a narrow column it was cut to "Dis…"
        st.button("Dismiss", key="load_error_dismiss", on_click=st.session_state.pop, args=(LOAD_ERROR, None),
                  width="content")


class PageProgress:
    """The loader's progress in the page: text lines in a status box, step counts on a bar.

    Why a bar: the first launch converts and loads for tens of seconds; a spinner alone looks hung.
    The load runs on the model worker, which only queues the lines and counts on its request
    (ModelWorker.load); this object is called from the page's own thread while it waits
    (Request.wait drains them every poll), so st.* is never called off the script thread.
    """

    def __init__(self, status) -> None:
        self._status = status
        self._bar = status.empty()

    def __call__(self, message: str) -> None:
        self._status.write(message)

    def fraction(self, phase: str, done: int, total: int) -> None:
        self._bar.progress(min(max(done / total, 0.0), 1.0) if total else 0.0, text=f"{phase}: {done} of {total}")


class ServerLoads:
    """What the autoload must know about every session on this server (one per process, through
    st.cache_resource): whether a model was ever chosen or resident here, and how many page loads
    are queued or running. Why: a session's autoload queued behind another session's load used to
    replace that load's model; now it neither starts while a load is pending nor runs once any model
    was chosen, and the check is repeated on the worker, where loads happen one at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.chosen = False
        self.pending = 0

    def begin(self, chosen: bool) -> None:
        with self._cond:
            self.pending += 1
            self.chosen = self.chosen or chosen

    def end(self, loaded: bool) -> None:
        with self._cond:
            self.pending -= 1
            self.chosen = self.chosen or loaded
            self._cond.notify_all()

    def mark_chosen(self) -> None:
        with self._cond:
            self.chosen = True

    def wait_idle(self, alive: Callable[[], bool], poll_s: float = 0.2) -> None:
        """Until no page load is queued or running (or this session has gone)."""
        with self._cond:
            while self.pending and alive():
                self._cond.wait(poll_s)


@st.cache_resource(show_spinner=False)
def server_loads() -> ServerLoads:
    return ServerLoads()


def load_into_registry(cfg: LoadConfig, autoload: bool = False) -> LoadedModel | None:
    """Load with visible progress; any failure becomes a message and the app keeps serving.
    `autoload`: the embedded default on first launch, which gives way to any model another session
    chose meanwhile (checked again on the worker, just before it would load).

    Call it from the main area: the progress and the error show where the user is looking."""
    switches = operator_switches()
    cfg.token = hf_secret()
    cfg.allow_pickle = switches.allow_pickle
    cfg.trust_remote_code = switches.trust_remote_code
    cfg.allow_local_paths = switches.allow_local_paths
    label = cfg.source if isinstance(cfg.source, str) else "the model"
    loads = server_loads()
    loads.begin(chosen=not autoload)
    loaded = None
    with st.status(f"Loading {label[:80]} in {cfg.precision}…", expanded=True) as status:
        try:
            loaded = _load_on_worker(cfg, autoload, status)
        except Exception as exc:  # noqa: BLE001 - the one boundary: a message, never a traceback
            status.update(label="Load failed: the model loaded before is still there" if current_model() else
                          "Load failed", state="error", expanded=False)
            show_error(user_message(exc))
            return None
        finally:
            loads.end(loaded is not None)
        if loaded is None:
            status.update(label="Another session chose a model; using that one", state="complete", expanded=False)
            return None
        status.update(label=f"Loaded {loaded.name} ({loaded.precision}) in {loaded.load_seconds:.1f} s",
                      state="complete", expanded=False)
    st.session_state.pop(LOAD_ERROR, None)
    return loaded


def _load_on_worker(cfg: LoadConfig, autoload: bool, status) -> LoadedModel | None:
    """The load as one worker request. An autoload re-checks there, in turn with every other load,
    that no model was chosen or is resident, and otherwise does nothing (None)."""
    worker, loads = model_worker(), server_loads()

    def run(_loaded, req) -> LoadedModel | None:
        if autoload and (worker.registry.current is not None or loads.chosen):
            return None
        return worker.registry.load(cfg, progress=req)

    request = worker.submit(run, session_id(), kind="load", load_id=None, needs_model=False)
    return request.wait(progress=PageProgress(status), alive=session_alive(),
                        on_wait=lambda n: status.write(queue_note(n)) if n else None)


def ensure_model() -> LoadedModel | None:
    """The resident model. On a server where no model was ever chosen and none is loading, the
    embedded default is loaded (unless turned off); while another session's load is queued or
    running, this page waits for it and uses what it loaded, instead of loading over it."""
    loads = server_loads()
    if loads.pending:  # the resident model is about to change: a request made for it now would be refused
        with st.spinner("Another session is loading a model; waiting for it…"):
            loads.wait_idle(session_alive())
    loaded = current_model()
    if loaded is not None:
        loads.mark_chosen()
        return loaded
    autoload = autoload_enabled()
    if autoload and not loads.chosen and not loads.pending and not st.session_state.get(AUTOLOAD_TRIED):
        st.session_state[AUTOLOAD_TRIED] = True
        loaded = load_into_registry(LoadConfig(), autoload=True)
    return loaded


def memory_caption() -> str:
    snap = memory_snapshot()
    parts = [f"process RSS {fmt_bytes(snap.rss_bytes)}"]
    for dev, alloc in snap.cuda_allocated.items():
        parts.append(f"{dev} {fmt_bytes(alloc)} allocated / {fmt_bytes(snap.cuda_reserved[dev])} reserved")
    return " · ".join(parts)
