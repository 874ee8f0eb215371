"""Moving recorded tensors off the compute device while the forward runs, or keeping them there.

Why asynchronous: a synchronising copy per recorded tensor would stall the forward at every
layer; on CUDA the copies run on a side stream into pinned host memory instead. Why pooled: fresh
pinned memory stalls while an older capture still holds its own (explorer/record/buffer_pool.py);
the buffers one capture takes go back to the pool when that capture is garbage-collected.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import torch

from explorer.record.buffer_pool import BufferPool, shared_pool

K = TypeVar("K", bound=Hashable)


class Offloader:
    """Moves recorded tensors off the compute device without stalling the forward.

    On CUDA, copies run on a side stream into pinned host memory from `pool` (call finish()
    before reading; call lease(owner) so the buffers go back when the owner dies). On CPU nothing
    moves: a tensor that owns all of its storage is kept as is (RoPE outputs are fresh tensors),
    and only views into something larger (a fused qkv output) are copied; a pool passed
    explicitly is used on CPU too (tests of the pool's logic without pinned memory).
    """

    def __init__(self, to_cpu: bool = True, pool: BufferPool | None = None):
        self.to_cpu = to_cpu
        self._pool = pool
        self._pool_on_cpu = pool is not None
        self._raws: list[torch.Tensor] = []
        self._streams: dict[torch.device, torch.cuda.Stream] = {}

    @property
    def pool(self) -> BufferPool:
        if self._pool is None:
            self._pool = shared_pool(pin=True)
        return self._pool

    def _take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        out, raw = self.pool.take(tuple(shape), dtype)
        self._raws.append(raw)
        return out

    def lease(self, owner: object) -> None:
        """The host buffers taken so far go back to the pool when `owner` is garbage-collected."""
        if self._raws:
            self.pool.lease(owner, self._raws)
        self._raws = []

    @classmethod
    def keep(cls, t: torch.Tensor) -> torch.Tensor:
        """`t` kept where it is: as is when it owns its storage, else a compact copy."""
        t = t.detach()
        return t if cls.owns_storage(t) else t.clone(memory_format=torch.contiguous_format)

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
            if self._pool_on_cpu:
                out = self._take(tuple(t.shape), t.dtype)
                out.copy_(t)
                return out
            return self.keep(t)
        if not self.to_cpu:
            return self.keep(t)
        if t.device.type != "cuda":
            return t.to("cpu")
        stream = self._stream(t.device)
        t = t if t.is_contiguous() else t.contiguous()
        out = self._take(tuple(t.shape), t.dtype)        # pinned, from the pool: truly asynchronous
        with torch.cuda.stream(stream):
            out.copy_(t, non_blocking=True)
        t.record_stream(stream)
        return out

    def new_buffer(self, shape: tuple[int, ...], dtype: torch.dtype, like: torch.device) -> torch.Tensor:
        """A host buffer that copy_into can fill asynchronously (pinned when the source is CUDA)."""
        if like.type == "cuda" and not self.to_cpu:
            return torch.empty(shape, dtype=dtype, device=like)
        if like.type == "cuda" or self._pool_on_cpu:
            return self._take(tuple(shape), dtype)
        return torch.empty(shape, dtype=dtype)

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
