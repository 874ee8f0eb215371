"""One long-lived thread owns the resident model; every model call is a request queued to it.

Why: Streamlit runs each rerun in a fresh thread. On a GPU every new thread pays cuDNN's per-thread
set-up of its attention backend again (about 50 ms of CPU per forward), so one thread that
outlives requests runs every forward. It also gives the model one owner: load and unload are
requests like any other, so nothing runs on a model that is being replaced.

Chat answers ("stream" requests) do not queue behind each other: they join one decode batch
(explorer/model/decode_batch.py) at its next step and leave it the moment they end, so a class of
students shares each forward. Between two decode steps the thread runs one other request (a
capture, a function of a page), so a capture waits at most one step. Shareable calls at the head of
several sessions' queues with the same key run as one (a batched capture of several prompts,
explorer/record/capture_batch.py): a class that captures its turns at once waits for one forward,
not for one each. A load, an unload or an
exclusive job (the comparison) waits until the batch has finished, then runs alone; answers
queued behind it were made for the old model and fail with ModelReplaced.

Sessions queue fairly (round robin over session ids), each waiting request can say how many run
before it, and a request is cancelled whether it is still queued (it never runs) or running (its
row leaves the batch at the next step; a long forward stops at the next decoder layer).
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explorer.model.decode_batch import DecodeBatch, Row
from explorer.model.errors import ModelReplaced
from explorer.model.generation import new_batch, result_of
from explorer.model.loading import LoadConfig, LoadedModel, ModelRegistry
from explorer.model.worker_request import (
    POLL_S,
    Alive,
    NoModelLoaded,
    OnWait,
    Request,
    RequestCancelled,
    Shareable,
    cancellable_forward,
    load_id_of,
    model_changed,
)
from explorer.model.worker_shared import SHARED_MOST, companions, run_shared

ALONE = ("load", "unload", "exclusive")   # kinds that wait for the decode batch to finish, then run alone
_STEP = object()                          # _take's answer: run one decode step


class ModelWorker:
    """The thread that owns the resident model. One per process (the app keeps it in cache_resource).

    `current` and `load_id` may be read from any thread; everything that touches the model is a
    request. `status()` (and `status_file`, when given) says whether it is busy, for tests and ops.
    """

    def __init__(self, registry: ModelRegistry | None = None, status_file: str | os.PathLike | None = None,
                 name: str = "model-worker") -> None:
        self.registry = registry or ModelRegistry()
        self.status_file = Path(status_file) if status_file else None
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[Request]] = OrderedDict()  # sessions in turn order
        self._running: Request | None = None
        self._group: list[Request] = []         # shareable calls running with _running, as one
        self._shared_most = 1                   # the most requests one shared run has taken (status)
        self._batch: DecodeBatch | None = None
        self._rows: dict[int, tuple[Row, Request]] = {}   # id(row) -> (row, its request), while decoding
        self._step_due = False
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
    def load_id(self) -> int:
        """The resident model's LoadedModel.load_id (0: none): changes whenever it is replaced,
        unloaded or adopted, and not when a load is refused in preflight."""
        return load_id_of(self.registry.current)

    def snapshot(self) -> tuple[LoadedModel | None, int]:
        loaded = self.registry.current
        return loaded, load_id_of(loaded)

    def position(self, request: Request) -> int | None:
        """How many requests run before this one: those ahead in the queue, plus the one running.
        A chat answer joins the running batch without waiting for it, so the batch counts only
        for what must run alone."""
        with self._cond:
            if request is self._running or request in self._group or request.future.done():
                return None
            order = self._order()
            if request not in order:
                return None
            busy = self._running is not None or (request.kind in ALONE and bool(self._rows))
            return order.index(request) + (1 if busy else 0)

    def status(self) -> dict:
        with self._cond:
            running = self._running
            decoding = len(self._rows)
            return {"busy": running is not None or decoding > 0,
                    "running": running.kind if running else ("stream" if decoding else None),
                    "running_session": running.session if running else None, "decoding": decoding,
                    "queued": sum(len(q) for q in self._queues.values()), "load_id": self.load_id,
                    "model": getattr(self.registry.current, "name", None), "thread": self.thread.name,
                    "shared_most": self._shared_most,
                    "time": time.time()}

    def idle(self) -> bool:
        return not (status := self.status())["busy"] and status["queued"] == 0

    # ------------------------------------------------------------------ submitting
    def submit(self, fn: Callable[[LoadedModel | None, Request], Any], session: str = "default", *,
               kind: str = "call", load_id: int | None = -1, needs_model: bool = True,
               cancel_event: threading.Event | None = None, shared: Shareable | None = None) -> Request:
        """Queue `fn(loaded, request)`. `load_id=-1` means "the model resident now". For kind
        "stream", `fn` returns a decode Row, which joins the batch; the request's result is its
        GenerationResult. `shared`: this call may run together with others of its key; `fn` is
        how it runs alone."""
        with self._cond:
            if self._closed:
                raise RuntimeError("The model worker has shut down.")
            made_for = self.load_id if load_id == -1 else load_id
            request = Request(fn=fn, session=session, kind=kind, load_id=made_for, needs_model=needs_model,
                              worker=self, cancel_event=cancel_event or threading.Event(), shared=shared)
            self._queues.setdefault(session, deque()).append(request)
            self._cond.notify_all()
        self._write_status()
        return request

    def call(self, fn: Callable[[LoadedModel], Any], session: str = "default", **wait_kwargs) -> Any:
        """Run `fn(loaded)` on the worker and wait for its result (errors re-raised here)."""
        load_id = wait_kwargs.pop("load_id", -1)
        return self.submit(lambda loaded, _req: fn(loaded), session, load_id=load_id).wait(**wait_kwargs)

    def load(self, cfg: LoadConfig, session: str = "default", progress: Callable[[str], None] | None = None,
             **wait_kwargs) -> LoadedModel:
        """Replace the resident model (ModelRegistry.load semantics: bad input keeps the old one)."""
        def run(_loaded, req: Request) -> LoadedModel:
            return self.registry.load(cfg, progress=req)  # lines and step counts, queued for the caller
        return self.submit(run, session, kind="load", load_id=None, needs_model=False).wait(
            progress=progress, **wait_kwargs)

    def unload(self, session: str = "default", **wait_kwargs) -> None:
        def run(_loaded, _req) -> None:
            self.registry.unload()
        self.submit(run, session, kind="unload", load_id=None, needs_model=False).wait(**wait_kwargs)

    def adopt(self, loaded: LoadedModel, session: str = "default") -> None:
        """Make an already loaded model resident (tests, the CLI)."""
        def run(_loaded, _req) -> None:
            self.registry.adopt(loaded)
        self.submit(run, session, kind="load", load_id=None, needs_model=False).wait()

    def exclusive(self, fn: Callable[[Request], Any], session: str = "default", **wait_kwargs) -> Any:
        """Run `fn(request)` with the worker to itself and no model assumed (the comparison, which
        loads its own models). Every request made for the model resident before fails afterwards."""
        def run(_loaded, req: Request) -> Any:
            return fn(req)
        return self.submit(run, session, kind="exclusive", load_id=None, needs_model=False).wait(**wait_kwargs)

    def cancel_session(self, session: str) -> int:
        """Cancel every request of a session (queued, running, decoding); returns how many."""
        with self._cond:
            mine = list(self._queues.get(session, ()))
            if self._running is not None and self._running.session == session:
                mine.append(self._running)
            mine += [req for req in self._group if req.session == session]
            mine += [req for _row, req in self._rows.values() if req.session == session]
        for request in mine:
            request.cancel()
        return len(mine)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            pending = [r for q in self._queues.values() for r in q]
            self._queues.clear()
            running = ([self._running] if self._running is not None else []) + self._group
            running += [req for _row, req in self._rows.values()]
            self._cond.notify_all()
        for request in pending:
            request.cancel_event.set()
            request.future.cancel()
        for request in running:
            request.cancel_event.set()
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

    def _pop(self, request: Request) -> None:
        """Take `request` off its session's queue; that session goes to the back of the turn order."""
        q = self._queues.pop(request.session)
        q.remove(request)
        if q:
            self._queues[request.session] = q

    def _take(self) -> Request | list[Request] | object | None:
        """The next thing to do: a request, a group of shareable calls (a list), _STEP (one decode
        step), or None (shut down)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                decoding = self._batch is not None and self._batch.active
                if decoding and self._step_due:
                    return _STEP
                order = self._order()
                head = order[0] if order else None
                if head is not None and not (head.kind in ALONE and decoding):
                    self._pop(head)
                    if head.kind != "stream":
                        self._running = head
                    group = companions(self._queues, head, SHARED_MOST)
                    if group:
                        for other in group:
                            self._pop(other)
                        self._group = group
                        return [head, *group]
                    return head
                if decoding:
                    return _STEP
                self._cond.wait()

    def _loop(self) -> None:
        while True:
            job = self._take()
            if job is None:
                self._end_batch(RequestCancelled("The model worker has shut down."))
                return
            if job is _STEP:
                self._step()
                continue
            self._write_status()
            try:
                if isinstance(job, list):
                    self._run_shared(job)
                    self._step_due = True
                elif job.kind == "stream":
                    self._join(job)
                else:
                    self._run(job)
                    self._step_due = True     # the batch moves on before the next request runs
            finally:
                with self._cond:
                    self._running = None
                    self._group = []
                self._write_status()

    def _admit(self, request: Request) -> tuple[bool, LoadedModel | None]:
        """Mark a request running and check that its model is still the resident one. (False, _):
        it ended here (cancelled, or its model was replaced), its caller told."""
        if request.cancelled or not request.future.set_running_or_notify_cancel():
            if not request.future.done():
                request.future.cancel()
            request.inbox.put(("done", None))
            return False, None
        request.started = time.perf_counter()
        loaded = self.registry.current
        try:
            if request.needs_model:
                if model_changed(request.load_id, loaded):
                    raise ModelReplaced("The model changed while this waited; run it again.")
                if loaded is None:
                    raise NoModelLoaded()
                loaded.ensure_current()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            request.future.set_exception(exc)
            request.inbox.put(("done", None))
            return False, None
        return True, loaded

    def _run(self, request: Request) -> None:
        ok, loaded = self._admit(request)
        if not ok:
            return
        try:
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

    def _run_shared(self, group: list[Request]) -> None:
        admitted = [(request, loaded) for request in group for ok, loaded in [self._admit(request)] if ok]
        if admitted:
            self._shared_most = max(self._shared_most, len(admitted))
            run_shared([r for r, _ in admitted], admitted[0][1])

    # ------------------------------------------------------------------ the decode batch
    def _join(self, request: Request) -> None:
        """A chat answer: prepare its row now, prefill it at the next step."""
        ok, loaded = self._admit(request)
        if not ok:
            return
        try:
            row = request.fn(loaded, request)
        except BaseException as exc:  # noqa: BLE001 - a bad prompt: this request only
            request.future.set_exception(exc)
            request.inbox.put(("done", None))
            return
        row.stop_event = request.cancel_event
        if self._batch is None or self._batch.model is not loaded.model:
            self._batch = new_batch(loaded)
        with self._cond:
            self._rows[id(row)] = (row, request)
        self._batch.add(row)

    def _step(self) -> None:
        self._step_due = False
        batch = self._batch
        for _row, request in list(self._rows.values()):
            if request.abandoned(request.abandon_after_s):
                request.cancel_event.set()       # its reader is gone: the row leaves at this step
        loaded = self.registry.current
        try:
            ended = batch.step(lambda stopped: cancellable_forward(batch.model, stopped))
        except BaseException as exc:  # noqa: BLE001 - the batch itself broke: every row gets the message
            ended = batch.fail_all(exc)
        for row in ended:
            self._finish(loaded, row)
        if not batch.active:
            self._batch = None
        if ended:
            self._write_status()

    def _finish(self, loaded: LoadedModel | None, row: Row) -> None:
        with self._cond:
            _row, request = self._rows.pop(id(row))
        try:
            if row.error is not None and request.cancelled:
                raise RequestCancelled("Cancelled.")
            result = result_of(loaded, row, submitted=request.submitted)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)
        request.inbox.put(("done", None))

    def _end_batch(self, exc: BaseException) -> None:
        if self._batch is not None:
            loaded = self.registry.current
            for row in self._batch.fail_all(exc):
                self._finish(loaded, row)
            self._batch = None

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


__all__ = ["POLL_S", "Alive", "ModelReplaced", "ModelWorker", "NoModelLoaded", "OnWait", "Request",
           "RequestCancelled", "load_id_of", "model_changed"]
