"""Shareable calls: several sessions' requests that wait at the same moment, run as one.

Why: a class captures its turns at the same moment (answers of one length end at one decode
step); run one after another, the last student waits for every other forward. The worker only
groups requests and hands them to their `Shareable.run_many` (a batched capture of several
prompts, explorer/record/capture_batch.py); what they compute is not its business.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from explorer.model.decode_batch import AllSet
from explorer.model.loading import LoadedModel
from explorer.model.worker_request import Request, RequestCancelled, cancellable_forward

SHARED_MOST = 32                          # shareable calls one shared run may take


def companions(queues: OrderedDict[str, deque[Request]], head: Request, most: int = SHARED_MOST) -> list[Request]:
    """Shareable calls at the head of other sessions' queues that can run with `head` (same
    model, same key). Only queue heads: a session's own requests keep their order."""
    if head.shared is None:
        return []
    out = []
    for session, q in queues.items():
        other = q[0]
        if session == head.session:            # head's next request: it waits for head, in order
            continue
        if (other.shared is not None and other.load_id == head.load_id and not other.cancelled
                and other.shared.key == head.shared.key):
            out.append(other)
        if len(out) == most - 1:
            break
    return out


def run_shared(requests: list[Request], loaded: LoadedModel) -> None:
    """Admitted requests as one run (`run_many`), each told its own outcome. If the run fails as a
    whole (out of memory, say), each runs alone, so a cause fails only the call it belongs to."""
    for request in requests:
        request.ran_with = len(requests)
    try:
        try:
            with cancellable_forward(loaded.model, AllSet(r.cancel_event for r in requests)):
                results: list[Any] = requests[0].shared.run_many(loaded, [r.shared.item for r in requests])
        except Exception:  # noqa: BLE001 - retried one by one below, each with its own outcome
            results = [_run_alone(loaded, r) for r in requests]
        for request, result in zip(requests, results):
            if request.cancelled and not isinstance(result, BaseException):
                result = RequestCancelled("Cancelled.")
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
    finally:
        for request in requests:
            request.inbox.put(("done", None))


def _run_alone(loaded: LoadedModel, request: Request) -> Any:
    if request.cancelled:
        return RequestCancelled("Cancelled.")
    try:
        with cancellable_forward(loaded.model, request.cancel_event):
            return request.fn(loaded, request)
    except Exception as exc:  # noqa: BLE001 - handed to its own caller
        return exc


__all__ = ["SHARED_MOST", "companions", "run_shared"]
