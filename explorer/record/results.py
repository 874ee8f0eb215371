"""Results computed after the forward (by explorer.analyse) that a Capture keeps.

Why they are defined here, below analyse: a Capture memoises them and a capture file saves
them, so a file opened without the model can still show head summaries and the logit lens.
Both are plain tensors; the maths that fills them lives in explorer.analyse.attention and
explorer.analyse.lens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class HeadSummaries:
    """Per-head attention statistics; every tensor is (layers, heads, T) float32, one value per query.

    Why per query and not just per head: the views plot how a head's behaviour changes along the
    prompt; head-level means are one `.mean(-1)` away (see `per_head`).
    """
    layers: list[int]             # layer index of each first-axis row
    entropy: torch.Tensor         # (L, H, T) nats; 0 = all mass on one key
    first_token: torch.Tensor     # (L, H, T) probability on position 0 (attention sink)
    lookback: torch.Tensor        # (L, H, T) expected distance i - j to the attended keys

    def per_head(self) -> dict[str, torch.Tensor]:
        """Means over query positions, each (L, H). Position 0 is left out when there are others:
        its only possible key is itself, so it says nothing about the head."""
        sl = slice(1, None) if self.entropy.shape[-1] > 1 else slice(None)
        return {"entropy": self.entropy[..., sl].mean(-1), "first_token": self.first_token[..., sl].mean(-1),
                "lookback": self.lookback[..., sl].mean(-1)}


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


__all__ = ["HeadSummaries", "LensResult"]
