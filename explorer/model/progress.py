"""Step counts from inside transformers' long loops, for a progress bar instead of a spinner.

Why: loading weights and converting a GGUF take tens of seconds on first launch, and the only
sign of life transformers gives is a tqdm bar on the server's stderr. transformers lets one hook
every bar it creates (`transformers.utils.logging.set_tqdm_hook`); the GGUF reader uses
`tqdm.auto` directly, so its module-level name is wrapped the same way. Both are installed once
per process and route each bar to the sink of the *thread that created it*, so two loads in two
threads (or none at all) never see each other's counts.

A `progress` callback that also has a ``fraction(phase, done, total)`` method receives the counts;
a plain ``Callable[[str], None]`` keeps receiving only the text lines, as before.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

_local = threading.local()
_install_lock = threading.Lock()
_installed = False
MIN_INTERVAL_S = 0.1  # at most ten updates a second reach the sink (a 135M model has ~300 tensors)


@runtime_checkable
class FractionSink(Protocol):
    def __call__(self, message: str) -> None: ...

    def fraction(self, phase: str, done: int, total: int) -> None: ...


class _Reporting:
    """A tqdm bar that also tells the sink how far it got; everything else goes to the real bar."""

    def __init__(self, bar: Any, sink: FractionSink, phase: str, total: int | None) -> None:
        self._bar, self._sink, self._phase = bar, sink, phase
        self._total = total if total is not None else getattr(bar, "total", None)
        self._done, self._last = 0, 0.0

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._total and (force or now - self._last >= MIN_INTERVAL_S):
            self._last = now
            self._sink.fraction(self._phase, min(self._done, self._total), self._total)

    def __iter__(self) -> Iterator[Any]:
        for item in self._bar:
            yield item
            self._done += 1
            self._report(self._done == self._total)

    def update(self, n: int = 1) -> Any:
        self._done += n
        self._report(self._done == self._total)
        return self._bar.update(n)

    def __enter__(self) -> _Reporting:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._bar.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)


def _wrap(bar: Any, args: tuple, kwargs: dict) -> Any:
    sink = getattr(_local, "sink", None)
    if sink is None:
        return bar
    iterable = args[0] if args else kwargs.get("iterable")
    total = kwargs.get("total")
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    phase = str(kwargs.get("desc") or "Working").rstrip(".")
    return _Reporting(bar, sink, phase, total)


def _install() -> None:
    """Hook transformers' bars and the GGUF reader's once per process, chaining any earlier hook."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from transformers.utils import logging as hf_logging

        previous: Callable | None = None

        def hook(factory: Callable, args: tuple, kwargs: dict) -> Any:
            bar = previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)
            return _wrap(bar, args, kwargs)

        if hasattr(hf_logging, "set_tqdm_hook"):
            previous = hf_logging.set_tqdm_hook(hook)
        try:
            from transformers import modeling_gguf_pytorch_utils as gguf_utils

            original = gguf_utils.tqdm

            def gguf_tqdm(*args: Any, **kwargs: Any) -> Any:
                return _wrap(original(*args, **kwargs), args, kwargs)

            gguf_utils.tqdm = gguf_tqdm
        except (ImportError, AttributeError):  # no GGUF support installed: nothing to count there
            pass
        _installed = True


@contextlib.contextmanager
def counting_steps(progress: Callable[[str], None] | None) -> Iterator[None]:
    """Inside this block, this thread's transformers bars report to `progress.fraction`."""
    if not isinstance(progress, FractionSink):
        yield
        return
    _install()
    outer = getattr(_local, "sink", None)
    _local.sink = progress
    try:
        yield
    finally:
        _local.sink = outer


def say_fraction(progress: Callable[[str], None] | None, phase: str, done: int, total: int) -> None:
    """A coarse step of our own (e.g. 'saving the converted folder') on the same bar."""
    if isinstance(progress, FractionSink):
        progress.fraction(phase, done, total)
