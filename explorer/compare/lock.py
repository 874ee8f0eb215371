"""One comparison at a time in this process, and who is running it.

Why: a comparison unloads the one resident model and loads its own, one after another. Two
sessions comparing at once would unload each other's models mid-run. The lock is process-wide
(every Streamlit session shares the process) and says who holds it, so the second session is
told plainly instead of waiting in silence or fighting over memory.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Holder:
    owner: str          # an opaque id of the session (never shown: it is not a name)
    label: str          # what is being compared, for the message to others
    since: float        # time.time() when it started


class CompareBusy(RuntimeError):
    """Another session holds the comparison lock; the message is meant to be shown as is."""

    def __init__(self, holder: Holder) -> None:
        minutes = max(0, int((time.time() - holder.since) // 60))
        running = f"for {minutes} min" if minutes else "for less than a minute"
        super().__init__(f"Someone else is running a comparison ({holder.label}, {running}). Only one comparison "
                         "runs at a time, because each one swaps the shared model; run yours when it ends.")
        self.holder = holder


class CompareLock:
    """A non-reentrant lock with its holder's identity; `acquire` can wait a while or refuse at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: Holder | None = None

    @property
    def holder(self) -> Holder | None:
        return self._holder

    def acquire(self, owner: str, label: str, wait_s: float = 0.0) -> Holder:
        """Take the lock for `owner`, or raise CompareBusy after `wait_s` seconds."""
        got = self._lock.acquire(timeout=wait_s) if wait_s > 0 else self._lock.acquire(blocking=False)
        if not got:
            raise CompareBusy(self._holder or Holder("?", "a comparison", time.time()))
        self._holder = Holder(owner, label, time.time())
        return self._holder

    def release(self, owner: str) -> None:
        """Release if `owner` holds it; anyone else's release is ignored (a stale or double call)."""
        if self._holder is not None and self._holder.owner == owner:
            self._holder = None
            self._lock.release()


COMPARE_LOCK = CompareLock()
