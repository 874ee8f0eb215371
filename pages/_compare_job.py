"""A comparison running in a thread of its own, so the page stays live: progress, Cancel, leaving.

Why a thread: run in the script itself, a comparison blocks the session; a click on Cancel could
only interrupt it at the next Streamlit call, skipping the chat model's reload and the lock's
release. Here the thread holds the lock and waits on the model worker, which runs the whole sequence —
unload the chat model, compare, load the chat model again — as one exclusive request; `cancel` is
that request's cancel event. The page only reads `lines` and sets `cancel`. Neither thread calls
Streamlit.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from explorer.compare.lock import COMPARE_LOCK
from explorer.compare.run import CompareConfig, ComparisonResult, LoadAccess, run_comparison
from explorer.model.errors import user_message
from explorer.model.loading import ModelRegistry
from explorer.model.worker import ModelWorker, Request, RequestCancelled


@dataclass
class CompareJob:
    owner: str
    config: CompareConfig
    reload: bool
    lines: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: ComparisonResult | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)

    def say(self, line: str) -> None:
        self.lines.append(line)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()


def describe(config: CompareConfig) -> str:
    return f"{len(config.models)} model(s) × {len(config.precisions)} precision(s)"


def start(config: CompareConfig, reload: bool, owner: str, worker: ModelWorker, access: LoadAccess,
          session: str = "default", alive: Callable[[], bool] | None = None) -> CompareJob:
    """Take the process-wide lock (CompareBusy if another session holds it) and start the thread,
    which hands the comparison to the model worker as one exclusive request and waits for it."""
    COMPARE_LOCK.acquire(owner, describe(config))
    job = CompareJob(owner=owner, config=config, reload=reload)
    try:
        threading.Thread(target=_work, args=(job, worker, access, session, alive), name=f"compare-{owner[:8]}",
                         daemon=True).start()
    except BaseException:
        COMPARE_LOCK.release(owner)
        raise
    return job


def compare_on_worker(reg: ModelRegistry, config: CompareConfig, reload: bool, access: LoadAccess,
                      req: Request) -> ComparisonResult:
    """Runs on the model worker, which has the machine to itself meanwhile: the chat model is
    unloaded, every run loads its own model, and the chat model comes back when asked. The
    request's cancel event is the comparison's: it stops between prompts and runs."""
    resident = reg.current
    previous = (resident.config, resident.name, resident.precision) if resident is not None else None
    del resident
    if previous is not None:
        req.say(f"Unloading the chat model ({previous[1]}, {previous[2]}) so the comparison has the memory.")
        reg.unload()
    result = run_comparison(config, progress=req.say, access=access, cancel=req.cancel_event)
    if req.cancelled:
        req.say("Cancelled.")
    if reload and previous is not None:
        req.say(f"Loading the chat model ({previous[1]}) again…")
        try:
            reg.load(previous[0], progress=req.say)
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback
            req.say(f"The chat model could not be loaded again: {user_message(exc)}")
    return result


def _work(job: CompareJob, worker: ModelWorker, access: LoadAccess, session: str,
          alive: Callable[[], bool] | None) -> None:
    try:
        request = worker.submit(lambda _loaded, req: compare_on_worker(worker.registry, job.config, job.reload,
                                                                       access, req),
                                session, kind="exclusive", load_id=None, needs_model=False, cancel_event=job.cancel)
        job.result = request.wait(progress=job.say, alive=alive,
                                  on_wait=lambda n: job.say(f"Queued: {n} ahead on the model worker…") if n else None)
    except RequestCancelled:
        job.say("Cancelled before it started.")
    except Exception as exc:  # noqa: BLE001 - the page shows it; the lock is released below
        job.error = f"The comparison stopped: {user_message(exc)}"
    finally:
        COMPARE_LOCK.release(job.owner)
        job.done.set()
