"""The logit lens as the internals views show it: a window of top-k tokens, and one position's trajectory.

Every access to the model's final norm and LM head goes through `model_lens` (one small function).
The Capture holds no model: the caller's ModelRef (a weak reference to the model and tokenizer that
made it) is passed in, so a capture kept in a session never keeps an unloaded model alive. The
capture is only read: lenses and token texts computed here are kept in the caller's `Derived`.
What applies the head (lens_result, lens_window, trajectory, node_lens) is a model computation:
the app runs it on the model worker (the Readout's runner).
"""
from __future__ import annotations

import copy
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explorer.analyse.derived import Derived
from explorer.analyse.lens import LensHead, LensResult, ModelRef, logit_lens
from explorer.record.capture_data import Capture

LENS_MAX_POSITIONS = 48    # the lens writes a token in every cell: at most this many positions a window
FILE_LENS_K = 5            # top-k kept in a saved file's logit lens


@dataclass
class LensWindow:
    """Top-k logit-lens tokens for every kept layer over a window of positions."""
    layers: list[int]
    positions: list[int]
    token_ids: np.ndarray    # (L, P, k) int64
    probs: np.ndarray        # (L, P, k) float32
    texts: list[list[list[str]]]   # [L][P][k] decoded token strings


@dataclass
class Trajectory:
    """How the final prediction at one position emerges across layers.

    exact=False: from a saved file without the model, where only the top-k per layer is known;
    rank is -1 (and prob NaN) where the prediction was outside that top-k.
    """
    position: int
    target_id: int
    target_text: str
    layers: list[int]
    prob: np.ndarray         # (L,) float32
    rank: np.ndarray         # (L,) int64, 0 = top token
    top_texts: list[str]     # each layer's own top token
    exact: bool
    k: int                   # top-k known per layer when not exact


_FP32_HEADS: weakref.WeakKeyDictionary[nn.Module, LensHead] = weakref.WeakKeyDictionary()
_FP32_LOCK = threading.Lock()


def cpu_float_lens_head(head: LensHead | None) -> LensHead | None:
    """A float32 copy of a bf16/fp16 LM head that lives on CPU, shared by all captures of a model.

    Why: CPU matmuls in bf16 are several times slower than in float32 (the lens multiplies every
    hidden state by the whole vocabulary). The copy holds no reference to the model, so a capture
    kept in a session does not keep an unloaded model's head alive. Heads on GPU, or quantized
    heads, are returned unchanged.
    """
    if head is None or not isinstance(head.lm_head, nn.Linear):
        return head
    weight = head.lm_head.weight
    if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16):
        return head
    with _FP32_LOCK:
        cached = _FP32_HEADS.get(head.lm_head)
        if cached is None:
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=head.lm_head.bias is not None)
            with torch.no_grad():
                linear.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)
                if head.lm_head.bias is not None:
                    linear.bias = nn.Parameter(head.lm_head.bias.detach().float().clone(), requires_grad=False)
            norm = copy.deepcopy(head.final_norm).float() if head.final_norm is not None else None
            cached = LensHead(final_norm=norm, lm_head=linear, final_softcap=head.final_softcap)
            _FP32_HEADS[head.lm_head] = cached
    return cached


def model_lens(cap: Capture, source: ModelRef) -> LensHead | None:
    """The model's final norm + LM head for this capture's lens, or None (a file, a model since
    unloaded, or no residual stream). The one place that reaches for them; on CPU a bf16/fp16
    head is swapped for a shared float32 copy (made here: call it where model computations run)."""
    if cap.residual is None:
        return None
    return cpu_float_lens_head(source.lens_head())


def model_lens_possible(cap: Capture, source: ModelRef) -> bool:
    """Whether model_lens would find a head, without touching the model's tensors."""
    return cap.residual is not None and source.model is not None


def lens_available(cap: Capture, results: Derived, source: ModelRef) -> bool:
    return model_lens_possible(cap, source) or bool(results.lens)


def token_text(cap: Capture, results: Derived, source: ModelRef, token_id: int) -> str:
    """Decoded text of an id, remembered in `results` (so a file saved with them keeps it)."""
    results.learn_texts([token_id], source.decode())
    return results.token_text(cap, token_id)


def lens_result(cap: Capture, results: Derived, source: ModelRef, k: int, positions: list[int] | None) -> LensResult:
    """Top-k per kept layer: from the model when it is there, else from a file's saved lens."""
    head = model_lens(cap, source)
    if head is not None:
        return logit_lens(cap, head, k=k, positions=positions, decode=source.decode(), derived=results)
    for kept_k in sorted(results.lens):
        if kept_k >= k:
            r = results.lens[kept_k].select(None, positions)
            return LensResult(r.layers, r.positions, r.token_ids[..., :k], r.probs[..., :k])
    if results.lens:
        return results.lens[max(results.lens)].select(None, positions)
    raise LookupError("the logit lens needs the model's final norm and LM head, or a capture file "
                      "saved with its logit lens")


def full_lens(cap: Capture, results: Derived, source: ModelRef, k: int = FILE_LENS_K) -> LensResult | None:
    """The lens over every kept layer and position (kept in `results`, so a saved file carries it);
    None when the model's head is not at hand."""
    head = model_lens(cap, source)
    if head is None:
        return results.lens.get(k)
    return logit_lens(cap, head, k=k, decode=source.decode(), derived=results)


def lens_window(cap: Capture, results: Derived, source: ModelRef, start: int, stop: int, k: int) -> LensWindow:
    """Top-k after every kept layer for positions [start, stop) (already clipped by the caller)."""
    r = lens_result(cap, results, source, k, list(range(start, stop)))
    ids = r.token_ids.numpy()                                                     # (L, P, k)
    texts = [[[token_text(cap, results, source, int(i)) for i in cell] for cell in row] for row in ids]
    return LensWindow(list(r.layers), list(r.positions), ids, r.probs.float().numpy(), texts)


def trajectory(cap: Capture, results: Derived, source: ModelRef, position: int) -> Trajectory:
    """Rank and probability, after every kept layer, of the token the model finally predicts."""
    head = model_lens(cap, source)
    if head is None:
        return _trajectory_from_file(cap, results, source, position)
    hidden = cap.residual[:, position]                                       # (R, d)
    logits = head.logits(hidden).float().cpu()                               # (R, V)
    if position == cap.num_tokens - 1 and cap.last_logits is not None:
        target = int(cap.last_logits.argmax())
    else:
        target = int(logits[-1].argmax())
    probs = torch.softmax(logits, -1)
    rank = (logits > logits[:, target:target + 1]).sum(-1)                   # (R,)
    tops = [token_text(cap, results, source, int(i)) for i in logits.argmax(-1)]
    return Trajectory(position, target, token_text(cap, results, source, target), list(cap.residual_layers),
                      probs[:, target].numpy().astype(np.float32), rank.numpy().astype(np.int64),
                      tops, True, int(logits.shape[-1]))


def _trajectory_from_file(cap: Capture, results: Derived, source: ModelRef, position: int) -> Trajectory:
    """Only a saved top-k per layer is known: rank -1 and NaN where the prediction fell outside it."""
    r = lens_result(cap, results, source, FILE_LENS_K, [position])
    ids, probs = r.token_ids[:, 0], r.probs[:, 0]                             # (R, k)
    target = int(ids[-1, 0])
    hit = ids == target
    rank = torch.where(hit.any(-1), hit.float().argmax(-1), torch.tensor(-1))
    prob = torch.where(hit.any(-1), (probs * hit).sum(-1), torch.tensor(float("nan")))
    return Trajectory(position, target, results.token_text(cap, target), list(r.layers),
                      prob.numpy().astype(np.float32), rank.numpy().astype(np.int64),
                      [results.token_text(cap, int(i)) for i in ids[:, 0]], False, int(ids.shape[-1]))


def node_lens(cap: Capture, results: Derived, source: ModelRef, vector: torch.Tensor, k: int = 5
              ) -> list[tuple[str, float]] | None:
    """Top-k (text, probability) of one residual-stream vector read through the final norm and LM
    head (a routes node); None when the model's head is not at hand."""
    head = model_lens(cap, source)
    if head is None:
        return None
    probs = torch.softmax(head.logits(vector[None])[0].float(), -1)          # (V,)
    top = probs.topk(k)
    return [(token_text(cap, results, source, int(i)), float(p)) for p, i in zip(top.values, top.indices)]


__all__ = ["FILE_LENS_K", "LENS_MAX_POSITIONS", "LensWindow", "Trajectory", "cpu_float_lens_head", "full_lens",
           "lens_available", "lens_result", "lens_window", "model_lens", "model_lens_possible", "node_lens",
           "token_text", "trajectory"]
