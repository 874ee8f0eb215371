"""Moving recorded tensors off the compute device while the forward runs.

Why asynchronous: a synchronising copy per recorded tensor would stall the forward at every
layer; on CUDA the copies run on a side stream into pinned host memory instead.
"""
from __future__ import annotations

from typing import Hashable, TypeVar

import torch

K = TypeVar("K", bound=Hashable)


class Offloader:
    """Moves recorded tensors off the compute device without stalling the forward.

    On CUDA, copies run on a side stream into pinned host memory (call finish() before reading).
    On CPU nothing moves: a tensor that owns all of its storage is kept as is (RoPE outputs are
    fresh tensors), and only views into something larger (a fused qkv output) are copied.
    """

    def __init__(self, to_cpu: bool = True):
        self.to_cpu = to_cpu
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        return stream

    @staticmethod
    def owns_storage(t: torch.Tensor) -> bool:
        return t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if t.device.type == "cpu":
            return t if self.owns_storage(t) else t.clone(memory_format=torch.contiguous_format)
        if not self.to_cpu:
            return t.clone()
        if t.device.type != "cuda":
            return t.to("cpu")
        stream = self._stream(t.device)
        # Explicitly pinned (and in the source's memory layout) so the copy is truly asynchronous.
        out = torch.empty_like(t, device="cpu", pin_memory=True)
        with torch.cuda.stream(stream):
            out.copy_(t, non_blocking=True)
        t.record_stream(stream)
        return out

    def new_buffer(self, shape: tuple[int, ...], dtype: torch.dtype, like: torch.device) -> torch.Tensor:
        """A host buffer that copy_into can fill asynchronously (pinned when the source is CUDA)."""
        if like.type == "cuda" and not self.to_cpu:
            return torch.empty(shape, dtype=dtype, device=like)
        return torch.empty(shape, dtype=dtype, pin_memory=like.type == "cuda")

    def copy_into(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        src = src.detach()
        if src.device.type != "cuda" or dst.device == src.device:
            dst.copy_(src)
            return
        stream = self._stream(src.device)
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)
        src.record_stream(stream)

    def finish(self) -> None:
        for stream in self._streams.values():
            stream.synchronize()


def gather_small(tensors: dict[K, torch.Tensor]) -> dict[K, torch.Tensor]:
    """Many small tensors to CPU with one transfer per (device, shape, dtype) group: one
    synchronising copy each would cost more than computing them did."""
    out: dict[K, torch.Tensor] = {}
    groups: dict[tuple, list[K]] = {}
    for key, t in tensors.items():
        groups.setdefault((t.device, tuple(t.shape), t.dtype), []).append(key)
    for (device, _, _), keys in groups.items():
        if device.type == "cpu":
            out.update((k, tensors[k]) for k in keys)
            continue
        host = torch.stack([tensors[k] for k in keys]).cpu()
        out.update(zip(keys, host))
    return out


__all__ = ["Offloader", "gather_small"]
