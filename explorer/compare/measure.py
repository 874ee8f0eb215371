"""How a comparison measures: peak memory of a block, per-token timing, and the machine it ran on.

Why apart from the run loop: these are the instruments; their numbers are only as good as their
method, which each docstring states (see also the `peak_method` note in explorer.compare.run).
"""
from __future__ import annotations

import contextlib
import platform
import threading
import time

import psutil
import torch


class PeakMemory:
    """Peak memory of a block: CUDA's own counter on GPU, a 10 ms RSS sampler on CPU."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.cuda = torch.cuda.is_available()
        self.method = "cuda_max_allocated" if self.cuda else "rss_sampled"
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline = 0

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, proc.memory_info().rss - self._baseline)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)
        else:
            self._baseline = psutil.Process().memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.peak_bytes = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, psutil.Process().memory_info().rss - self._baseline)


class TokenClock:
    """A generate() streamer that only notes when each token arrives.

    generate hands the streamer every token as a CPU tensor, so on CUDA each timestamp is taken
    after that step's kernels finished: time to first token and the decode rate are honest
    without extra synchronisation, and no text decoding happens inside the timed loop.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:          # the first call carries the prompt: generation starts now
            self._prompt_seen = True
            self.start = time.perf_counter()
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass

    @property
    def time_to_first_token(self) -> float | None:
        return self.times[0] - self.start if self.times else None

    @property
    def tokens_per_second(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def machine_info() -> dict:
    """Where the numbers came from: they mean little without the hardware and versions."""
    import transformers

    info: dict = {"platform": platform.platform(), "python": platform.python_version(),
                  "torch": torch.__version__, "transformers": transformers.__version__,
                  "cores": psutil.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
                  "device": "cuda" if torch.cuda.is_available() else "cpu"}
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - quantized precisions then fall back, and say so
        info["bitsandbytes"] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        info["cpu"] = platform.machine()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    with contextlib.suppress(OSError, AttributeError):
        info["load_average"] = [round(x, 2) for x in psutil.getloadavg()]
    return info


__all__ = ["PeakMemory", "TokenClock", "machine_info"]
