"""Forward hooks for one capture: registered in a context manager, removed in `finally`.

Why hooks check ownership: one shared model may serve two threads at once; a hook fires for
every forward, so each first asks whether the forward running it is its own capture's.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from explorer.record.attention_fn import Recorder, active_recorder
from explorer.record.offload import Offloader


@contextlib.contextmanager
def forward_hooks(registrations: Sequence[tuple[nn.Module, str, Callable]]) -> Iterator[list]:
    """Register ("pre" | "post" | "post_kw", fn) hooks and always remove every one, on exceptions
    too. "post_kw" hooks also get the call's keyword arguments: fn(module, args, kwargs, output)."""
    handles: list = []
    try:
        for module, kind, fn in registrations:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            elif kind == "post_kw":
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "last_hidden_state", None)


class HookSession:
    """Hook bodies for one capture. Every hook first checks that the forward running it belongs
    to this capture (the thread's active recorder), so two threads on one model never mix.

    Statistics are reductions straight from the model dtype into float32 (no float copies of the
    activations); residuals are copied into one preallocated (layers, T, d) buffer, asynchronously
    on CUDA. Holding activations by reference and batching the statistics after the forward was
    tried: it cost more (page faults on fresh memory) than the reductions it saved.
    """

    def __init__(self, recorder: Recorder, offload: Offloader, keep: list[int],
                 residual_dtype: torch.dtype | None):
        self.recorder = recorder
        self.offload = offload
        self.keep = keep
        self.slot = {layer: i for i, layer in enumerate(keep)}
        self.residual_dtype = residual_dtype
        self.embeddings: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None           # (len(keep), T, d) buffer
        self.filled: set[int] = set()
        self.norm_stats: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # ‖x‖, mean y, ‖y‖
        self.norm_dims: dict[str, tuple[int, int]] = {}
        self.attn_norm: dict[int, torch.Tensor] = {}
        self.mlp_norm: dict[int, torch.Tensor] = {}

    def mine(self) -> bool:
        return active_recorder() is self.recorder

    def embeddings_hook(self, module, args, kwargs=None):
        # kwargs defaults: torch may call a pre-hook removed by another thread without them.
        if not self.mine():
            return None
        hidden = args[0] if args else (kwargs or {}).get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            dtype = self.residual_dtype or hidden.dtype
            self.embeddings = self.offload.new_buffer(tuple(hidden.shape[1:]), dtype, hidden.device)
            self.offload.copy_into(self.embeddings, hidden[0])
        return None

    def residual_hook(self, index: int):
        def hook(module, args, output):
            if not self.mine() or index not in self.slot:
                return
            hidden = _first_tensor(output)
            if hidden is None:
                return
            if self.residual is None:
                dtype = self.residual_dtype or hidden.dtype
                self.residual = self.offload.new_buffer((len(self.keep), *hidden.shape[1:]), dtype, hidden.device)
            self.offload.copy_into(self.residual[self.slot[index]], hidden[0])
            self.filled.add(index)
        return hook

    def norm_hook(self, name: str):
        def hook(module, args, output):
            if not self.mine() or not args or not isinstance(args[0], torch.Tensor):
                return
            out = _first_tensor(output)
            if out is None:
                return
            x, y = args[0][0], out[0]                                                 # (T, d)
            # Raw reductions only; scaling and std are done once for all norms when the capture is assembled.
            self.norm_stats[name] = (torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32),
                                     y.mean(-1, dtype=torch.float32),
                                     torch.linalg.vector_norm(y, dim=-1, dtype=torch.float32))
            self.norm_dims[name] = (x.shape[-1], y.shape[-1])
        return hook

    def block_norm_hook(self, kind: str, index: int):
        target = self.attn_norm if kind == "attn" else self.mlp_norm

        def hook(module, args, output):
            if self.mine():
                out = _first_tensor(output)
                if out is not None:
                    target[index] = torch.linalg.vector_norm(out[0], dim=-1, dtype=torch.float32)
        return hook


def norm_stats_from_raw(x_norm: torch.Tensor, y_mean: torch.Tensor, y_norm: torch.Tensor,
                         dims: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input RMS, output mean, output std from ‖x‖, mean(y), ‖y‖ over the last dimensions
    (dims): std comes from the output's RMS and mean, so no float copy of an activation is made."""
    out_rms = y_norm * dims[1] ** -0.5
    return x_norm * dims[0] ** -0.5, y_mean, (out_rms.square() - y_mean.square()).clamp_min(0).sqrt()


__all__ = ["HookSession", "forward_hooks", "norm_stats_from_raw"]
