"""What analysis derives from a capture after capture() returned, kept beside it, never inside.

Why beside: a Capture is what the forward recorded; it stays as capture() returned it, so any
number of views, threads and downloads can read one capture without one view's results (or a
half-written cache) showing up in another's. Whoever computes the lens, the head summaries or
new token texts keeps them in a `Derived` next to the capture (the views' Readout holds one), and
saving a file is told which results to carry (explorer.analyse.capture_bundle).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from explorer.record.capture_data import Capture


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

    def select(self, layers: Sequence[int] | None, positions: Sequence[int] | None) -> LensResult:
        li = [self.layers.index(l) for l in layers] if layers is not None else list(range(len(self.layers)))
        pi = [self.positions.index(p) for p in positions] if positions is not None else list(range(len(self.positions)))
        return LensResult([self.layers[i] for i in li], [self.positions[i] for i in pi],
                          self.token_ids[li][:, pi], self.probs[li][:, pi])


_TEXTS_LOCK = threading.Lock()   # a view on the page's thread and one on the worker may learn texts at once


@dataclass
class Derived:
    """Results computed from one capture after the forward: head summaries, full logit lenses
    (k -> LensResult over every kept layer and position) and the decoded texts of token ids the
    views showed. A file saved with them opens without the model and still shows them."""
    summaries: HeadSummaries | None = None
    lens: dict[int, LensResult] = field(default_factory=dict)
    vocab: dict[int, str] = field(default_factory=dict)

    def learn_texts(self, token_ids: Iterable[int], decode: Callable[[int], str] | None) -> None:
        """Decode ids a view is about to show with the caller's decoder, and keep the strings."""
        if decode is None:
            return
        with _TEXTS_LOCK:
            for i in token_ids:
                if int(i) not in self.vocab:
                    self.vocab[int(i)] = decode(int(i))

    def token_text(self, capture: Capture, token_id: int) -> str:
        """The decoded string of an id, from these results or the capture, else "<id>"."""
        text = self.vocab.get(int(token_id))
        return text if text is not None else capture.token_text(token_id)

    def file_vocab(self, capture: Capture) -> dict[int, str]:
        """Every id -> text known for this capture: what capture() kept plus what views learned."""
        return {**capture.vocab, **self.vocab}


__all__ = ["Derived", "HeadSummaries", "LensResult"]
