"""One long-lived thread owns the resident model; every model call is a request queued to it.

Why: Streamlit runs each rerun in a fresh thread, and a fresh thread per answer used to run
`generate`. On a GPU every new thread pays cuDNN's per-thread set-up of its attention backend
again (about 50 ms of CPU per forward), so the app chatted at 40% of the benchmarked speed. One
thread that outlives requests pays it once. It also gives the model one owner: load and unload
are requests like any other, so nothing runs on a model that is being replaced.

Sessions queue fairly (round robin over session ids, first come first served within one), each
waiting request can say how many run before it, and a request is cancelled whether it is still
queued (it never runs) or running (generation stops between two tokens). A request remembers
the model it was made for (its `LoadedModel.generation`): if another model became resident
meanwhile it fails with ModelReplaced instead of answering with a model the user did not see.

Callers wait on `Request.wait` (a future with progress lines and queue position), or iterate a
`WorkerStream`. Nothing here imports streamlit: a page passes `alive` to say whether its browser
session still exists, so a closed tab cancels its requests.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from explorer.model.anatomy import find_anatomy, resolve
from explorer.model.errors import ExplorerError, GenerationError, ModelReplaced
from explorer.model.loading import LoadConfig, LoadedModel, ModelRegistry

Alive = Callable[[], bool]
OnWait = Callable[[int], None]  # receives how many requests run before this one
POLL_S = 0.2  # how often a waiting caller checks its session, its position and progress lines


class RequestCancelled(ExplorerError):
    """The request was cancelled (stop, session closed, consumer gone) before it produced a result."""


class NoModelLoaded(GenerationError):
    """A model call was made while no model is resident."""

    def __init__(self, message: str = "No model is loaded.") -> None:
        super().__init__(message)


@contextlib.contextmanager
def cancellable_forward(model, event: threading.Event):
    """Let a cancel stop a long forward (a prefill, a capture) between two decoder layers.

    A generation step of one token is short and ends at the next token through its stopping
    criteria; a 4096-token prefill on a CPU can take a minute, which a closed tab should not wait
    for. Hooks exist for this request only and are removed in `finally`."""
    layers = [resolve(model, layer.name) for layer in find_anatomy(model).layers] if model is not None else []
    handles = []

    def check(_module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if event.is_set() and isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and hidden.shape[1] > 1:
            raise RequestCancelled("Cancelled.")   # (B, T>1, d): a multi-token forward, not a decode step
        return None

    try:
        handles = [layer.register_forward_pre_hook(check, with_kwargs=True) for layer in layers if layer is not None]
        yield
    finally:
        for handle in handles:
            handle.remove()


def generation_of(loaded: LoadedModel | None) -> int:
    """The resident model's `LoadedModel.generation` (0: none resident)."""
    return 0 if loaded is None else loaded.generation


def model_changed(made_for: int | None, loaded: LoadedModel | None) -> bool:
    """Is `loaded` another model than the one a request was made for (None: any model)? A thin
    reading of LoadedModel.generation; the model's own `ensure_current()` catches a retired one."""
    return made_for is not None and made_for != generation_of(loaded)


@dataclass(eq=False)
class Request:
    """One unit of work for the worker thread. `fn(loaded, request)` runs on that thread."""

    fn: Callable[[LoadedModel | None, "Request"], Any]
    session: str
    kind: str = "call"                      # "call" | "stream" | "load" | "unload" | "exclusive"
    generation: int | None = None           # LoadedModel.generation it was made for (0: none); None = any
    needs_model: bool = True
    cancel_event: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    inbox: "queue.SimpleQueue[tuple[str, Any]]" = field(default_factory=queue.SimpleQueue)
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    worker: "ModelWorker | None" = field(default=None, repr=False)
    last_poll: float = field(default_factory=time.monotonic)

    # ---- worker side
    def say(self, message: str) -> None:
        """A progress line for the waiting caller (st.status lives on the caller's thread, not here)."""
        self.inbox.put(("say", message))

    def __call__(self, message: str) -> None:
        """A request is itself a loader `progress` (explorer.model.progress.FractionSink)."""
        self.say(message)

    def fraction(self, phase: str, done: int, total: int) -> None:
        """Step counts for the waiting caller's progress bar (explorer.model.progress), queued like `say`."""
        self.inbox.put(("fraction", (phase, done, total)))

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def abandoned(self, after_s: float) -> bool:
        """The caller stopped polling (its thread died or the generator was dropped without close)."""
        return time.monotonic() - self.last_poll > after_s

    # ---- caller side
    def cancel(self) -> None:
        """Queued: it never runs. Running: generation stops at the next token, a long forward (prefill,
        capture) at the next decoder layer (see cancellable_forward)."""
        self.cancel_event.set()
        if self.worker is not None:
            self.worker._drop_if_queued(self)

    def position(self) -> int | None:
        """How many requests run before this one (0: running or next); None once it is running or done."""
        return self.worker.position(self) if self.worker is not None else None

    def wait(self, progress: Callable[[str], None] | None = None, on_wait: OnWait | None = None,
             alive: Alive | None = None, timeout: float | None = None) -> Any:
        """The result, raising in this thread whatever the worker raised. Forwards progress lines,
        reports the queue position when it changes, and cancels if `alive()` turns false."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown: int | None = -1
        try:
            while True:
                self.last_poll = time.monotonic()
                self._drain(progress)
                if self.future.done():
                    self._drain(progress)
                    try:
                        return self.future.result()
                    except CancelledError:
                        raise RequestCancelled("Cancelled.") from None
                if alive is not None and not alive():
                    self.cancel()
                    raise RequestCancelled("The session that asked for this closed.")
                pos = self.position()
                if on_wait is not None and pos != shown:
                    shown = pos
                    if pos is not None:
                        on_wait(pos)
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel()
                    raise TimeoutError("The model worker did not answer in time.")
                try:
                    self.future.result(timeout=POLL_S)
                except Exception:  # noqa: BLE001 - timeout, or the error re-raised on the next turn
                    pass
        except BaseException:
            if not self.future.done():   # the script thread was stopped (rerun, tab closed)
                self.cancel()
            raise

    def _drain(self, progress: Callable[[str], None] | None) -> None:
        while True:
            try:
                kind, payload = self.inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "say" and progress is not None:
                progress(payload)
            elif kind == "fraction" and progress is not None and hasattr(progress, "fraction"):
                progress.fraction(*payload)


class ModelWorker:
    """The thread that owns the resident model. One per process (the app keeps it in cache_resource).

    `current` and `generation` may be read from any thread; everything that touches the model is a
    request. `status()` (and `status_file`, when given) says whether it is busy, for tests and ops.
    """

    def __init__(self, registry: ModelRegistry | None = None, status_file: str | os.PathLike | None = None,
                 name: str = "model-worker") -> None:
        self.registry = registry or ModelRegistry()
        self.status_file = Path(status_file) if status_file else None
        self._cond = threading.Condition()
        self._queues: "OrderedDict[str, deque[Request]]" = OrderedDict()  # sessions in turn order
        self._running: Request | None = None
        self._closed = False
        self._status_lock = threading.Lock()    # state read and file written as one step: no stale write last
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()
        self._write_status()

    # ------------------------------------------------------------------ reading
    @property
    def current(self) -> LoadedModel | None:
        return self.registry.current

    @property
    def generation(self) -> int:
        """The resident model's LoadedModel.generation (0: none): changes whenever it is replaced,
        unloaded or adopted, and not when a load is refused in preflight."""
        return generation_of(self.registry.current)

    def snapshot(self) -> tuple[LoadedModel | None, int]:
        loaded = self.registry.current
        return loaded, generation_of(loaded)

    def position(self, request: Request) -> int | None:
        with self._cond:
            if request is self._running or request.future.done():
                return None
            order = self._order()
            if request not in order:
                return None
            return order.index(request) + (1 if self._running is not None else 0)

    def status(self) -> dict:
        with self._cond:
            running = self._running
            return {"busy": running is not None, "running": running.kind if running else None,
                    "running_session": running.session if running else None,
                    "queued": sum(len(q) for q in self._queues.values()), "generation": self.generation,
                    "model": getattr(self.registry.current, "name", None), "thread": self.thread.name,
                    "time": time.time()}

    def idle(self) -> bool:
        return not (status := self.status())["busy"] and status["queued"] == 0

    # ------------------------------------------------------------------ submitting
    def submit(self, fn: Callable[[LoadedModel | None, Request], Any], session: str = "default", *,
               kind: str = "call", generation: int | None = -1, needs_model: bool = True,
               cancel_event: threading.Event | None = None) -> Request:
        """Queue `fn(loaded, request)`. `generation=-1` means "the model resident now"."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The model worker has shut down.")
            made_for = self.generation if generation == -1 else generation
            request = Request(fn=fn, session=session, kind=kind, generation=made_for, needs_model=needs_model,
                              worker=self, cancel_event=cancel_event or threading.Event())
            self._queues.setdefault(session, deque()).append(request)
            self._cond.notify_all()
        self._write_status()
        return request

    def call(self, fn: Callable[[LoadedModel], Any], session: str = "default", **wait_kwargs) -> Any:
        """Run `fn(loaded)` on the worker and wait for its result (errors re-raised here)."""
        generation = wait_kwargs.pop("generation", -1)
        return self.submit(lambda loaded, _req: fn(loaded), session, generation=generation).wait(**wait_kwargs)

    def load(self, cfg: LoadConfig, session: str = "default", progress: Callable[[str], None] | None = None,
             **wait_kwargs) -> LoadedModel:
        """Replace the resident model (ModelRegistry.load semantics: bad input keeps the old one)."""
        def run(_loaded, req: Request) -> LoadedModel:
            return self.registry.load(cfg, progress=req)  # lines and step counts, queued for the caller
        return self.submit(run, session, kind="load", generation=None, needs_model=False).wait(
            progress=progress, **wait_kwargs)

    def unload(self, session: str = "default", **wait_kwargs) -> None:
        def run(_loaded, _req) -> None:
            self.registry.unload()
        self.submit(run, session, kind="unload", generation=None, needs_model=False).wait(**wait_kwargs)

    def adopt(self, loaded: LoadedModel, session: str = "default") -> None:
        """Make an already loaded model resident (tests, the CLI)."""
        def run(_loaded, _req) -> None:
            self.registry.adopt(loaded)
        self.submit(run, session, kind="load", generation=None, needs_model=False).wait()

    def exclusive(self, fn: Callable[[Request], Any], session: str = "default", **wait_kwargs) -> Any:
        """Run `fn(request)` with the worker to itself and no model assumed (the comparison, which
        loads its own models). Every request made for the model resident before fails afterwards."""
        def run(_loaded, req: Request) -> Any:
            return fn(req)
        return self.submit(run, session, kind="exclusive", generation=None, needs_model=False).wait(**wait_kwargs)

    def cancel_session(self, session: str) -> int:
        """Cancel every request of a session (queued and running); returns how many."""
        with self._cond:
            mine = list(self._queues.get(session, ()))
            if self._running is not None and self._running.session == session:
                mine.append(self._running)
        for request in mine:
            request.cancel()
        return len(mine)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            pending = [r for q in self._queues.values() for r in q]
            self._queues.clear()
            self._cond.notify_all()
        for request in pending:
            request.cancel_event.set()
            request.future.cancel()
        if self._running is not None:
            self._running.cancel_event.set()
        self.thread.join(timeout)

    # ------------------------------------------------------------------ the thread
    def _order(self) -> list[Request]:
        """The queued requests in the order they will run: round robin over sessions."""
        order: list[Request] = []
        queues = [list(q) for q in self._queues.values()]
        for i in range(max((len(q) for q in queues), default=0)):
            order.extend(q[i] for q in queues if i < len(q))
        return order

    def _drop_if_queued(self, request: Request) -> None:
        with self._cond:
            q = self._queues.get(request.session)
            if q is None or request not in q:
                return
            q.remove(request)
            if not q:
                del self._queues[request.session]
        request.future.cancel()
        request.inbox.put(("done", None))
        self._write_status()

    def _next(self) -> Request | None:
        with self._cond:
            while not self._queues and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            session, q = next(iter(self._queues.items()))
            request = q.popleft()
            del self._queues[session]
            if q:
                self._queues[session] = q          # back of the line: the next session goes first
            self._running = request
            return request

    def _loop(self) -> None:
        while True:
            request = self._next()
            if request is None:
                return
            self._write_status()
            try:
                self._run(request)
            finally:
                with self._cond:
                    self._running = None
                self._write_status()

    def _run(self, request: Request) -> None:
        if request.cancelled or not request.future.set_running_or_notify_cancel():
            if not request.future.done():
                request.future.cancel()
            request.inbox.put(("done", None))
            return
        request.started = time.perf_counter()
        loaded = self.registry.current
        try:
            if request.needs_model:
                if model_changed(request.generation, loaded):
                    raise ModelReplaced("The model changed while this waited; run it again.")
                if loaded is None:
                    raise NoModelLoaded()
                loaded.ensure_current()
            with cancellable_forward(getattr(loaded, "model", None) if request.needs_model else None,
                                     request.cancel_event):
                result = request.fn(loaded, request)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)
        finally:
            request.inbox.put(("done", None))     # wakes a reader at once instead of at its next poll
            del loaded

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        with self._status_lock:
            try:
                tmp = self.status_file.with_name(self.status_file.name + ".tmp")
                tmp.write_text(json.dumps(self.status()))
                os.replace(tmp, self.status_file)
            except OSError:
                pass

__all__ = ["ModelReplaced", "ModelWorker", "NoModelLoaded", "Request", "RequestCancelled", "generation_of",
           "model_changed"]
