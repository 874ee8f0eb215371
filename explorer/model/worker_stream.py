"""A streamed answer decoded on the model worker's thread and read in the caller's thread.

Why a stream of messages rather than a TextIteratorStreamer: the worker must never wait on a
consumer, and the consumer must notice a closed session or a silent worker. The consumer polls
its inbox every POLL_S, and each poll refreshes its queue position; if it stops polling (its
thread stopped, the generator dropped) its row leaves the worker's decode batch.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

from explorer.model.decode_batch import Row, RowEdit
from explorer.model.errors import ExplorerError, clean_text
from explorer.model.generation import GenerateOptions, GenerationError, GenerationResult, prepare, text_streamer
from explorer.model.loading import LoadedModel
from explorer.model.worker import POLL_S, Alive, ModelWorker, OnWait, Request, RequestCancelled


class WorkerStream:
    """A streamed answer decoded on the worker thread (in its shared batch); iterate it in the caller's thread.

    `wait_started` waits until the worker took the request and prepared the prompt, reporting the
    queue position at every poll; iterating yields text chunks and then sets `result`. If the
    caller stops pulling (rerun, tab closed, the generator dropped) the row is cancelled.
    """

    def __init__(self, worker: ModelWorker, messages, options, session: str = "default",
                 stop_event: threading.Event | None = None, load_id: int | None = -1,
                 abandon_after_s: float = 10.0, edit: RowEdit | None = None) -> None:
        self.options = options or GenerateOptions()
        self.messages = messages
        self.edit = edit               # hooks on this answer's row alone (an answer with heads off)
        self.prepared = None
        self.result: GenerationResult | None = None
        self._pending: list[str] = []
        self._finished = False
        self._quiet_since = time.monotonic()
        # the page's stop button and our cancel are one event
        self.request = worker.submit(self._row, session, kind="stream", load_id=load_id,
                                     cancel_event=stop_event)
        self.request.abandon_after_s = abandon_after_s
        self.submitted = self.request.submitted
        self.first_token_at: float | None = None

    # ---- worker side
    def _row(self, loaded: LoadedModel, req: Request) -> Row:
        if self.edit is not None:
            self.edit.check(loaded.model)        # a bad edit fails this request before its row joins
        prepared = prepare(loaded, self.messages, self.options.max_new_tokens)
        req.inbox.put(("prepared", prepared))
        streamer = text_streamer(loaded.tokenizer, lambda text: req.inbox.put(("text", text)))
        return Row(prepared, self.options, streamer, req.cancel_event, edit=self.edit)

    # ---- caller side
    def cancel(self) -> None:
        self.request.cancel()

    def position(self) -> int | None:
        return self.request.position()

    @property
    def stop_event(self) -> threading.Event:
        return self.request.cancel_event

    def _poll(self, alive: Alive | None, waited_for: str) -> tuple[str, Any]:
        """One poll: the next message, or ("idle", None) after POLL_S; raises if the session closed
        or the worker stayed silent for the options' timeout once the request had started."""
        now = time.monotonic()
        self.request.last_poll = now
        try:
            message = self.request.inbox.get(timeout=POLL_S)
            self._quiet_since = time.monotonic()
            return message
        except queue.Empty:
            pass
        if alive is not None and not alive():
            self.cancel()
            raise RequestCancelled("The session that asked for this closed.")
        if self.request.future.done() and self.request.inbox.empty():
            return "done", None
        now = time.monotonic()
        if self.request.started is None:
            self._quiet_since = now            # queued time does not count against the timeout
        elif now - self._quiet_since > self.options.timeout_s:
            self.cancel()
            raise GenerationError(f"No {waited_for} arrived for {self.options.timeout_s:.0f} s: generation "
                                  "stopped. The model may be too slow for this prompt on this machine.")
        return "idle", None

    def wait_started(self, on_wait: OnWait | None = None, alive: Alive | None = None):
        """Wait in the queue until the prompt is prepared; returns the PreparedPrompt. The position
        is read at every poll (POLL_S), so "Queued: N ahead" counts down as the queue moves."""
        shown: int | None = -1
        try:
            while self.prepared is None:
                pos = self.position()
                if on_wait is not None and pos is not None and pos != shown:
                    shown = pos
                    on_wait(pos)
                kind, payload = self._poll(alive, "answer")
                if kind == "prepared":
                    self.prepared = payload
                elif kind == "text":
                    self._pending.append(payload)
                elif kind == "done":
                    self._raise_outcome()
            return self.prepared
        except BaseException:
            if not self.request.future.done():
                self.cancel()
            raise

    def iterate(self, alive: Alive | None = None) -> Iterator[str]:
        """Text chunks as the worker produces them; `result` is set once the stream ends."""
        try:
            if self.prepared is None:
                self.wait_started(alive=alive)
            while self._pending:
                chunk = self._pending.pop(0)
                self._mark_first(chunk)
                yield chunk
            while True:
                kind, payload = self._poll(alive, "token")
                if kind == "text":
                    self._mark_first(payload)
                    yield payload
                elif kind == "done":
                    break
            self.result = self._raise_outcome()
            self._finished = True
        finally:
            if not self._finished:
                self.cancel()

    def __iter__(self) -> Iterator[str]:
        return self.iterate()

    def _mark_first(self, chunk: str) -> None:
        if chunk and self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def _raise_outcome(self):
        """The worker's result, or its exception re-raised here as the message the page shows."""
        try:
            return self.request.future.result()
        except CancelledError:
            raise RequestCancelled("Cancelled.") from None
        except ExplorerError:            # GenerationError, ModelReplaced, NoModelLoaded, RequestCancelled
            raise
        except Exception as exc:  # noqa: BLE001 - shown as a message, the model stays usable
            raise GenerationError(f"Generation failed: {type(exc).__name__}: {clean_text(str(exc))[:300]}") from None

    @property
    def time_to_first_token_from_submit(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted


def stream_on_worker(worker: ModelWorker, messages, options=None, session: str = "default",
                     stop_event: threading.Event | None = None, load_id: int | None = -1,
                     edit: RowEdit | None = None) -> WorkerStream:
    return WorkerStream(worker, messages, options, session, stop_event, load_id, edit=edit)


def gather(streams: list[WorkerStream], alive: Alive | None = None) -> list[GenerationResult]:
    """Read several streams to their end, round robin, so none looks abandoned while another is read;
    they decode together in the worker's batch. Results in the order given; the first error is raised.
    While one stream is read, the others are marked as read too (at every idle poll): a slow token
    of one must not make the worker drop the others as abandoned."""
    def alive_all() -> bool:
        now = time.monotonic()
        for s in streams:
            s.request.last_poll = now
        return alive() if alive is not None else True

    readers = {i: s.iterate(alive_all) for i, s in enumerate(streams)}
    try:
        while readers:
            for i in list(readers):
                try:
                    next(readers[i])
                except StopIteration:
                    del readers[i]
    finally:
        for reader in readers.values():
            reader.close()                 # cancels what is left when one failed
    return [s.result for s in streams]


__all__ = ["WorkerStream", "gather", "stream_on_worker"]
