"""Logit lens: the model's own final norm and LM head applied to every layer's residual stream.

Why on demand: at long prompts and large vocabularies, layers × positions × vocab logits are far
larger than the capture itself; only the top-k per (layer, position) is kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from explorer.model.anatomy import Anatomy, resolve

if TYPE_CHECKING:
    from explorer.record.capture import Capture

# Logit elements per block (rows × vocab): ~64 MiB of float32.
BLOCK_ELEMENTS = 1 << 24


@dataclass
class LensHead:
    """The modules that turn a residual vector into next-token logits. Never saved with a capture."""
    final_norm: nn.Module | None
    lm_head: nn.Module
    final_softcap: float | None = None   # Gemma-2 style tanh capping of the final logits

    @classmethod
    def from_model(cls, model: nn.Module, anatomy: Anatomy) -> "LensHead | None":
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


@dataclass
class LensResult:
    """Top-k tokens after each layer, as the model would read them if it stopped there."""
    layers: list[int]            # decoder layer of each first-axis row
    positions: list[int]         # token position of each second-axis column
    token_ids: torch.Tensor      # (len(layers), len(positions), k) int64
    probs: torch.Tensor          # (len(layers), len(positions), k) float32, softmax probabilities

    def select(self, layers: Sequence[int] | None, positions: Sequence[int] | None) -> "LensResult":
        li = [self.layers.index(l) for l in layers] if layers is not None else list(range(len(self.layers)))
        pi = [self.positions.index(p) for p in positions] if positions is not None else list(range(len(self.positions)))
        return LensResult([self.layers[i] for i in li], [self.positions[i] for i in pi],
                          self.token_ids[li][:, pi], self.probs[li][:, pi])


def logit_lens(capture: "Capture", k: int = 5, layers: Sequence[int] | None = None,
               positions: Sequence[int] | None = None) -> LensResult:
    """Top-k next tokens and probabilities for each requested (layer, position).

    Uses the model attached to the capture; a capture opened from a file answers from what was
    computed before it was saved (the full lens for a given k is cached and saved).
    """
    all_layers = capture.residual_layers
    if layers is not None:
        missing = [l for l in layers if l not in all_layers]
        if missing:
            raise KeyError(f"residual stream of layers {missing} was not captured (captured: {all_layers})")
    cached = capture.lens_cache.get(k)
    if cached is not None:
        return cached.select(layers, positions)
    if capture.lens_head is None or capture.residual is None:
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
    vocab = capture.lens_head.logits(capture.residual[0, :1]).shape[-1]
    rows = max(1, BLOCK_ELEMENTS // vocab)
    for li, layer in enumerate(layer_list):
        hidden = capture.residual[all_layers.index(layer)].index_select(0, pos_t)   # (P, d)
        for r0 in range(0, len(pos_list), rows):
            r1 = min(len(pos_list), r0 + rows)
            logits = capture.lens_head.logits(hidden[r0:r1])                          # (b, V)
            top = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
            ids[li, r0:r1] = top.indices.cpu()
            probs[li, r0:r1] = top.values.cpu()
    result = LensResult(layer_list, pos_list, ids, probs)
    for token in ids.unique().tolist():
        capture.token_text(int(token))
    if full:
        capture.lens_cache[k] = result
    return result
