"""capture_batch(): several prompts captured in one forward, each its own Capture.

Why: a class captures its turns at the same moment (answers of one length end at one decode
step), and one capture after another makes the last student wait for fifteen forwards of the
others. On a GPU a short forward costs about what reading the weights costs, whatever the batch.

Why right padding and no mask: with causal attention a real token never sees the padding after
it, and every row keeps the positions 0..T-1 of its own forward. So each row's tensors are those
of its forward alone, up to the rounding of batched matrix products: identical on an H200 in NF4
(bench/results/capture_batch_cuda.md), exact in fp32 on a CPU, within ~2% on a CPU in NF4.

Why the single-prompt recorders are reused as they are: each row keeps its own plan, recorder,
hooks and buffers (explorer.record.capture.start_recording); one dispatcher hook per module and a
BatchRecorder in the attention function hand each row its slice of the batch, with that row's
recorder active, so "is this forward mine?" stays the same question for the same code.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from explorer.model.loading import LoadedModel
from explorer.model.worker import ModelWorker
from explorer.model.worker_request import Request, Shareable
from explorer.record.attention_fn import explorer_attention_enabled, recording, supports_attention_interface
from explorer.record.capture import (
    Capture,
    CaptureOptions,
    Recorded,
    RowRecording,
    assemble,
    capture,
    forward_kwargs,
    start_recording,
)
from explorer.record.capture_plan import CapturePlan, Prompt, input_device, plan_capture
from explorer.record.eager_fallback import FallbackPlan
from explorer.record.hooks import forward_hooks

BATCH_TOKENS = {"cpu": 512, "cuda": 8192}
"""Padded tokens (rows × the longest row) one batched capture forward may hold; longer prompts
are captured in several forwards (or alone): batching pays off where a forward is short."""


def _slice_row(x: Any, b: int, t: int, batch: int, width: int) -> Any:
    """Row b's part of a hook argument: (B, W, ...) tensors become (1, t, ...); (1, W, ...) tensors
    shared by every row (rotary tables) become (1, t, ...); anything else passes as it is."""
    if isinstance(x, torch.Tensor):
        if x.dim() >= 2 and x.shape[1] == width and x.shape[0] in (batch, 1):
            return x[b:b + 1, :t] if x.shape[0] == batch else x[:, :t]
        return x
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(_slice_row(v, b, t, batch, width) for v in x)
    if isinstance(x, list):
        return [_slice_row(v, b, t, batch, width) for v in x]
    if isinstance(x, dict):                       # a pre-hook's kwargs, or a model output
        items = {k: _slice_row(v, b, t, batch, width) for k, v in x.items()}
        return items if type(x) is dict else type(x)(**items)
    return x


@dataclass
class _Row:
    index: int                   # row in the batch
    tokens: int                  # its own length (the rest of the batch's width is padding)
    recording: RowRecording


class BatchRecorder:
    """What the attention function sees during a batched forward: it hands each row its own
    queries, keys, values and mask, to that row's Recorder."""

    def __init__(self, rows: list[_Row], batch: int):
        self.rows, self.batch = rows, batch
        self._masks: dict[tuple[int, int], torch.Tensor] = {}
        self._keepalive: list[torch.Tensor] = []      # the batch masks whose id() keys _masks
        wants_values = any(r.recording.recorder.on_value is not None for r in rows)
        self.on_value: Callable[[nn.Module, torch.Tensor], None] | None = self._values if wants_values else None

    def _mask(self, mask: torch.Tensor | None, row: _Row) -> torch.Tensor | None:
        """Row's (1, 1, t, t) part of a (B or 1, 1, W, W) mask, one object per batch mask and row
        (a row's Recorder stores each distinct mask once, by identity)."""
        if mask is None or mask.dim() != 4:
            return mask
        key = (id(mask), row.index)
        if key not in self._masks:
            self._keepalive.append(mask)
            b = row.index if mask.shape[0] == self.batch else 0
            self._masks[key] = mask[b:b + 1, :, :row.tokens, :row.tokens]
        return self._masks[key]

    def record(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float | None, softcap: float | None,
               sliding_window: int | None, is_causal: bool | None) -> None:
        for row in self.rows:                       # query (B, H, W, D), key (B, KV, W, D)
            b, t = row.index, row.tokens
            row.recording.recorder.record(module, query[b:b + 1, :, :t], key[b:b + 1, :, :t],
                                          self._mask(attention_mask, row), scaling, softcap, sliding_window,
                                          is_causal)

    def _values(self, module: nn.Module, value: torch.Tensor) -> None:
        for row in self.rows:                       # value (B, KV, W, hd)
            on_value = row.recording.recorder.on_value
            if on_value is not None:
                with recording(row.recording.recorder):
                    on_value(module, value[row.index:row.index + 1, :, :row.tokens])


def _dispatchers(rows: list[_Row], batch: int, width: int) -> list[tuple[nn.Module, str, Callable]]:
    """One hook per (module, kind) that runs every row's own hook on its slice, in row order."""
    grouped: dict[tuple[int, str], tuple[nn.Module, list[tuple[_Row, Callable]]]] = {}
    for row in rows:
        for module, kind, fn in row.recording.registrations:
            grouped.setdefault((id(module), kind), (module, []))[1].append((row, fn))
    out: list[tuple[nn.Module, str, Callable]] = []
    for (_, kind), (module, fns) in grouped.items():
        def hook(mod, *call, _fns=fns):
            for row, fn in _fns:
                sliced = [_slice_row(x, row.index, row.tokens, batch, width) for x in call]
                with recording(row.recording.recorder):
                    fn(mod, *sliced)
            return None                              # a recording hook never changes the forward
        out.append((module, kind, hook))
    return out


def _row_outputs(output: Any, rows: list[_Row], kept: list[int] | None) -> list[Any]:
    """Each row's logits at its own last token, as a (1, 1, V) output the single path reads."""
    logits = getattr(output, "logits", output if isinstance(output, torch.Tensor) else None)
    out = []
    for row in rows:
        if logits is None:
            out.append(None)
            continue
        at = kept.index(row.tokens - 1) if kept is not None else row.tokens - 1
        out.append(SimpleNamespace(logits=logits[row.index, at][None, None]))      # (1, 1, V)
    return out


def chunks(plans: Sequence[CapturePlan], max_tokens: int) -> list[list[int]]:
    """Groups of plan indices whose padded batch (rows × longest) stays within max_tokens; the
    longest prompts are grouped first, so rows of a group have similar lengths (little padding)."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in sorted(range(len(plans)), key=lambda i: -int(plans[i].ids.shape[0])):
        t = int(plans[i].ids.shape[0])
        if current and (len(current) + 1) * max(longest, t) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, t)
    if current:
        groups.append(current)
    return groups


def _run_rows(model: nn.Module, tokenizer, plans: list[CapturePlan], options: CaptureOptions) -> list[Capture]:
    """One batched forward for these plans (two or more), each row assembled into its Capture."""
    device = input_device(model)
    width = max(int(p.ids.shape[0]) for p in plans)
    ids = torch.stack([torch.cat([p.ids, p.ids[-1:].expand(width - p.ids.shape[0])]) for p in plans]).to(device)  # (B, W)
    rows = [_Row(i, int(p.ids.shape[0]), start_recording(model, p, options, device)) for i, p in enumerate(plans)]
    batch_recorder = BatchRecorder(rows, len(rows))
    kwargs = forward_kwargs(model)
    kept = None
    if "logits_to_keep" in kwargs:                  # every row's last position, not the batch's
        kept = sorted({r.tokens - 1 for r in rows})
        kwargs["logits_to_keep"] = torch.tensor(kept, device=device)
    want_attention = any(p.attention_layers for p in plans)
    switch = explorer_attention_enabled(model) if want_attention else contextlib.nullcontext(False)
    with (torch.inference_mode(), forward_hooks(_dispatchers(rows, len(rows), width)), switch as switched,
          recording(batch_recorder)):  # type: ignore[arg-type] - duck-typed: record() and on_value
        output = model(input_ids=ids, **kwargs)
        for row in rows:
            row.recording.offload.finish()
    caps = []
    for row, row_output in zip(rows, _row_outputs(output, rows, kept)):
        r = row.recording
        recorded = Recorded(r.session, r.store, row_output, bool(switched), r.components, FallbackPlan(), r.offload)
        caps.append(assemble(model, tokenizer, r.plan, recorded, options))
    return caps


def capture_batch(model: nn.Module, tokenizer, prompts: Sequence[Prompt], options: CaptureOptions | None = None,
                  max_tokens: int | None = None) -> list[Capture | BaseException]:
    """Capture every prompt, several in one forward where they fit `max_tokens` padded tokens.

    Returns one entry per prompt, in order: its Capture, or the exception its own prompt raised
    (too long, a bad token id): one bad prompt fails only itself. A model without the attention
    interface, or a group of one, takes the single-prompt path (capture()).
    """
    options = options or CaptureOptions()
    device = input_device(model)
    limit = max_tokens or BATCH_TOKENS.get(device.type, BATCH_TOKENS["cuda"])
    results: list[Capture | BaseException | None] = [None] * len(prompts)
    plans: dict[int, CapturePlan] = {}
    for i, prompt in enumerate(prompts):
        try:
            plans[i] = plan_capture(model, tokenizer, prompt, options)
        except Exception as exc:  # noqa: BLE001 - the row's own error, returned to its caller
            results[i] = exc
    order = sorted(plans)
    # only models that run the recording attention function share a forward: the eager fallback
    # needs each prompt's own output_attentions
    groups = (chunks([plans[i] for i in order], limit) if supports_attention_interface(model)
              else [[k] for k in range(len(order))])
    for group in groups:
        members = [order[k] for k in group]
        if len(members) == 1:
            i = members[0]
            try:
                results[i] = capture(model, tokenizer, plans[i].ids, options)
            except Exception as exc:  # noqa: BLE001 - as above
                results[i] = exc
            continue
        for i, cap in zip(members, _run_rows(model, tokenizer, [plans[i] for i in members], options)):
            results[i] = cap
    return results  # type: ignore[return-value] - every entry was filled above


def _capture_many(loaded: LoadedModel, items: list[tuple[Prompt, CaptureOptions]]) -> list[Capture | BaseException]:
    """The worker's shared run of several sessions' captures (items share their options)."""
    return capture_batch(loaded.model, loaded.tokenizer, [prompt for prompt, _ in items], items[0][1])


def submit_capture(worker: ModelWorker, prompt: Prompt, options: CaptureOptions, session: str = "default", *,
                   load_id: int | None = -1) -> Request:
    """Queue a capture on the model worker. Captures of other sessions waiting at the same moment
    with equal options share its forward; alone, it is capture()."""
    def alone(loaded: LoadedModel, _request: Request) -> Capture:
        return capture(loaded.model, loaded.tokenizer, prompt, options)
    return worker.submit(alone, session, load_id=load_id,
                         shared=Shareable(key=("capture", options), item=(prompt, options), run_many=_capture_many))


__all__ = ["BATCH_TOKENS", "BatchRecorder", "capture_batch", "chunks", "submit_capture"]
