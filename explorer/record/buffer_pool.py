"""Host buffers for recorded tensors, reused from one capture to the next.

Why a pool: allocating pinned host memory is slow (~0.6 s per GB on an H200 host) and, while an
older capture still holds its pinned pages, a fresh allocation stalls the forward (issue 17: one
capture in six took 3.5× the others). The page holds the last capture while the next one runs,
so two captures' buffers are alive at once; after that, each new capture takes back the buffers
that the capture it replaces gave up when it was garbage-collected (weakref.finalize).

Buffers are raw bytes keyed by size; a dtype and shape are views onto them. Sizes are rounded up
to a class (eight per doubling, at most 12.5% unused) and an idle buffer up to twice as large
serves too: a class's turns are each a few tokens longer than the last, and students' turns differ,
so exact sizes would rarely be seen twice. One pool per process
(`shared_pool()`), used by the attention recorder, the residual stream and the components part.
A buffer given back is reused only once no tensor views it any more (its storage's use count):
code that keeps a capture's residual after dropping the capture (drift's fingerprints) keeps
its data intact, and the buffer comes back when that holder dies too.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import psutil
import torch


@dataclass
class PoolStats:
    """What the pool has done, for tests and the benchmark."""
    allocations: int = 0          # raw buffers ever allocated
    allocated_bytes: int = 0
    reuses: int = 0               # buffers handed out again
    idle_bytes: int = 0           # bytes waiting in the pool


class BufferPool:
    """Raw host buffers keyed by byte size, handed out and taken back.

    `pin`: allocate page-locked memory (needed for asynchronous copies from CUDA); tests on CPU
    run the same logic with pin=False. `max_idle_bytes` bounds what the pool keeps when nobody
    holds it; beyond it, given-back buffers are freed (the largest first).
    """

    def __init__(self, pin: bool = True, max_idle_bytes: int | None = None):
        self.pin = pin
        self.max_idle_bytes = (max_idle_bytes if max_idle_bytes is not None
                               else min(64 * 2**30, int(0.3 * psutil.virtual_memory().total)))
        self.stats = PoolStats()
        self._idle: dict[int, list[torch.Tensor]] = {}
        self._pending: list[torch.Tensor] = []          # given back, still viewed by someone
        self._lock = threading.Lock()
        self._base = _use_count(torch.empty(1, dtype=torch.uint8))

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(tensor of `shape` and `dtype`, its raw uint8 buffer). Contents are undefined."""
        numel = 1
        for s in shape:
            numel *= int(s)
        nbytes = size_class(max(1, numel * torch.empty(0, dtype=dtype).element_size()))
        with self._lock:
            self._reclaim()
            raw = None
            for size in sorted(k for k, free in self._idle.items() if free and nbytes <= k <= 2 * nbytes)[:1]:
                raw = self._idle[size].pop()
                self.stats.reuses += 1
                self.stats.idle_bytes -= size
        if raw is None:
            raw = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
            with self._lock:
                self.stats.allocations += 1
                self.stats.allocated_bytes += nbytes
        return raw[: numel * torch.empty(0, dtype=dtype).element_size()].view(dtype).view(shape), raw

    def give_back(self, raws: list[torch.Tensor]) -> None:
        """Return buffers for reuse; only call once nothing reads them any more."""
        with self._lock:
            self._pending.extend(raws)

    def _reclaim(self) -> None:
        """Given-back buffers that nothing views any more become idle (the lock is held)."""
        still = []
        for raw in self._pending:
            if _use_count(raw) <= self._base:
                self._idle.setdefault(raw.numel(), []).append(raw)
                self.stats.idle_bytes += raw.numel()
            else:
                still.append(raw)
        self._pending = still
        self._trim()

    def _trim(self) -> None:
        for size in sorted(self._idle, reverse=True):
            while self.stats.idle_bytes > self.max_idle_bytes and self._idle[size]:
                self._idle[size].pop()
                self.stats.idle_bytes -= size

    def lease(self, owner: object, raws: list[torch.Tensor]) -> None:
        """Give `raws` back when `owner` is garbage-collected (or released)."""
        if raws:
            weakref.finalize(owner, self.give_back, list(raws))

    def clear(self) -> None:
        """Free every idle buffer (an unload, or a test starting clean)."""
        with self._lock:
            self._reclaim()
            self._idle.clear()
            self.stats.idle_bytes = 0

    def idle_bytes(self) -> int:
        with self._lock:
            self._reclaim()
            return self.stats.idle_bytes


def size_class(nbytes: int) -> int:
    """`nbytes` rounded up to one of eight sizes per doubling (exact up to 64 KiB)."""
    if nbytes <= 1 << 16:
        return nbytes
    step = 1 << (max(0, (nbytes - 1).bit_length() - 4))
    return -(-nbytes // step) * step


def _use_count(raw: torch.Tensor) -> int:
    """How many tensors share raw's storage (plus the temporaries of asking). Where torch cannot
    say, a large number: the buffer is never reused (correct, only slower)."""
    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return 1 << 30
    return int(counter(raw.untyped_storage()._cdata))


_SHARED: dict[bool, BufferPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(pin: bool = True) -> BufferPool:
    """The process's pool (one pinned, one pageable)."""
    with _SHARED_LOCK:
        pool = _SHARED.get(pin)
        if pool is None:
            pool = _SHARED[pin] = BufferPool(pin=pin)
        return pool


def pinning_available() -> bool:
    return torch.cuda.is_available()


__all__ = ["BufferPool", "PoolStats", "pinning_available", "shared_pool", "size_class"]
