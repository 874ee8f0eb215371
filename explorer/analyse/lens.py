"""Logit lens: the model's own final norm and LM head applied to every layer's residual stream.

Why on demand: at long prompts and large vocabularies, layers × positions × vocab logits are far
larger than the capture itself; only the top-k per (layer, position) is kept.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from explorer.analyse.derived import Derived, LensResult
from explorer.model.anatomy import Anatomy, resolve
from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.capture_data import Capture
from explorer.record.capture_plan import anatomy_of
from explorer.record.token_text import token_text


@dataclass
class LensHead:
    """The modules that turn a residual vector into next-token logits.

    Live parts of a model: never kept on a Capture. Whoever holds the model builds one when the
    lens is asked for (from_model is cheap), or keeps the model by weak reference.
    """
    final_norm: nn.Module | None
    lm_head: nn.Module
    final_softcap: float | None = None   # Gemma-2 style tanh capping of the final logits

    @classmethod
    def from_model(cls, model: nn.Module, anatomy: Anatomy | None = None) -> LensHead | None:
        """The model's final norm and LM head; None when the model has no LM head to find."""
        anatomy = anatomy or anatomy_of(model)
        head = resolve(model, anatomy.lm_head)
        if head is None:
            return None
        config = getattr(model, "config", None)
        softcap = getattr(config, "final_logit_softcapping", None) if config is not None else None
        return cls(final_norm=resolve(model, anatomy.final_norm), lm_head=head,
                   final_softcap=float(softcap) if softcap else None)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, d) residual vectors -> (N, V) float32 logits, computed where the head lives."""
        ref = self.final_norm if self.final_norm is not None else self.lm_head
        param = next((p for p in ref.parameters() if p.is_floating_point()), None)
        device = param.device if param is not None else hidden.device
        dtype = param.dtype if param is not None else hidden.dtype
        h = hidden.to(device=device, dtype=dtype)
        if self.final_norm is not None:
            h = self.final_norm(h)
        out = self.lm_head(h).float()
        if self.final_softcap:
            out = torch.tanh(out / self.final_softcap) * self.final_softcap
        return out


class ModelRef:
    """The model and tokenizer a capture came from, held by weak reference.

    Why weak: a view that keeps a capture in a session would otherwise keep an unloaded model's
    LM head and final norm (often the whole embedding matrix, when tied) alive. Once the model
    is gone, lens_head() is None and views answer from the results kept beside the capture.
    """

    def __init__(self, model: nn.Module | None = None, tokenizer: object | None = None):
        self._model = weakref.ref(model) if model is not None else None
        self._tokenizer = weakref.ref(tokenizer) if tokenizer is not None else None

    @property
    def model(self) -> nn.Module | None:
        return self._model() if self._model is not None else None

    def lens_head(self) -> LensHead | None:
        model = self.model
        return LensHead.from_model(model) if model is not None else None

    def decode(self) -> Callable[[int], str] | None:
        """id -> text while the tokenizer lives; None after."""
        tokenizer = self._tokenizer() if self._tokenizer is not None else None
        if tokenizer is None:
            return None
        return lambda i: token_text(tokenizer, int(i))


def logit_lens(capture: Capture, head: LensHead | None, k: int = 5, layers: Sequence[int] | None = None,
               positions: Sequence[int] | None = None, decode: Callable[[int], str] | None = None,
               derived: Derived | None = None) -> LensResult:
    """Top-k next tokens and probabilities for each requested (layer, position).

    head: the capture's model's LensHead (LensHead.from_model), or None where the model is gone:
    then the answer comes from `derived`, the results kept beside the capture (a full lens for a
    given k is kept there, and a file saved with it carries it). decode: the tokenizer's id -> text,
    so that `derived` remembers the strings of the tokens it now shows. The capture is only read.
    """
    all_layers = capture.residual_layers
    if layers is not None:
        missing = [l for l in layers if l not in all_layers]
        if missing:
            raise KeyError(f"residual stream of layers {missing} was not captured (captured: {all_layers})")
    kept = derived.lens.get(k) if derived is not None else None
    if kept is not None:
        return kept.select(layers, positions)
    if head is None or capture.residual is None:
        raise LookupError("the logit lens needs the model (final norm and LM head) and the residual stream; "
                          "open the capture with its model loaded, or compute the lens before saving")
    full = layers is None and positions is None
    layer_list = list(all_layers) if layers is None else list(layers)
    pos_list = list(range(capture.num_tokens)) if positions is None else [int(p) % capture.num_tokens for p in positions]
    ids = torch.empty(len(layer_list), len(pos_list), k, dtype=torch.long)
    probs = torch.empty(len(layer_list), len(pos_list), k, dtype=torch.float32)
    pos_t = torch.tensor(pos_list, dtype=torch.long)
    if not pos_list or not layer_list:
        return LensResult(layer_list, pos_list, ids, probs)
    vocab = head.logits(capture.residual[0, :1]).shape[-1]
    rows = max(1, BLOCK_ELEMENTS // vocab)
    for li, layer in enumerate(layer_list):
        hidden = capture.residual[all_layers.index(layer)].index_select(0, pos_t)   # (P, d)
        for r0 in range(0, len(pos_list), rows):
            r1 = min(len(pos_list), r0 + rows)
            logits = head.logits(hidden[r0:r1])                          # (b, V)
            top = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
            ids[li, r0:r1] = top.indices.cpu()
            probs[li, r0:r1] = top.values.cpu()
    result = LensResult(layer_list, pos_list, ids, probs)
    if derived is not None:
        derived.learn_texts(ids.unique().tolist(), decode)
        if full:
            derived.lens[k] = result
    return result


__all__ = ["LensHead", "LensResult", "ModelRef", "logit_lens"]
