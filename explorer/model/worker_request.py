"""A request to the model worker, as its caller and the worker thread both see it.

A request remembers the model it was made for (its `LoadedModel.load_id`), can be cancelled
queued or running, and carries an inbox of messages (progress lines, streamed text) that the
caller drains while it polls: the worker never waits on a caller.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import torch

from explorer.model.anatomy import find_anatomy, resolve
from explorer.model.errors import ExplorerError, NoModelLoaded
from explorer.model.loading import LoadedModel

Alive = Callable[[], bool]
OnWait = Callable[[int], None]  # receives how many requests run before this one
POLL_S = 0.2  # how often a waiting caller checks its session, its position and progress lines


class RequestCancelled(ExplorerError):
    """The request was cancelled (stop, session closed, consumer gone) before it produced a result."""


@contextlib.contextmanager
def cancellable_forward(model, event: threading.Event):
    """Let a cancel stop a long forward (a prefill, a capture) between two decoder layers.

    A generation step of one token is short and ends at the next token through its stopping
    criteria; a 4096-token prefill on a CPU can take a minute, which a closed tab should not wait
    for. `event` is anything with is_set(): a request's cancel event, or a shared prefill's
    decode_batch.AllSet (set once all its rows are stopped). Hooks exist for this forward only and are
    removed in `finally`."""
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


def load_id_of(loaded: LoadedModel | None) -> int:
    """The resident model's `LoadedModel.load_id` (0: none resident)."""
    return 0 if loaded is None else loaded.load_id


def model_changed(made_for: int | None, loaded: LoadedModel | None) -> bool:
    """Is `loaded` another model than the one a request was made for (None: any model)? A thin
    reading of LoadedModel.load_id; the model's own `ensure_current()` catches a retired one."""
    return made_for is not None and made_for != load_id_of(loaded)


@dataclass(frozen=True)
class Shareable:
    """What lets calls of several sessions waiting at once run as one: those with equal `key` are
    handed together, as `run_many(loaded, [item, ...])`, which returns one result or exception per
    item, in order. The worker knows nothing of what they compute (a batched capture, say)."""
    key: Any
    item: Any
    run_many: Callable[[LoadedModel, list[Any]], list[Any]]


@dataclass(eq=False)
class Request:
    """One unit of work for the worker thread. `fn(loaded, request)` runs on that thread."""

    fn: Callable[[LoadedModel | None, Request], Any]
    session: str
    kind: str = "call"                      # "call" | "stream" | "load" | "unload" | "exclusive"
    load_id: int | None = None           # LoadedModel.load_id it was made for (0: none); None = any
    needs_model: bool = True
    cancel_event: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)
    shared: Shareable | None = None         # a call that may share its run with others (see Shareable)
    inbox: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    ran_with: int = 1                       # how many requests ran together with it as one (itself included)
    worker: Any = field(default=None, repr=False)   # the ModelWorker that queued it (position, drop)
    last_poll: float = field(default_factory=time.monotonic)
    abandon_after_s: float = 10.0           # a caller silent this long is gone (see `abandoned`)

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


__all__ = ["POLL_S", "Alive", "NoModelLoaded", "OnWait", "Request", "RequestCancelled", "Shareable",
           "cancellable_forward", "load_id_of", "model_changed"]
