"""The one rule for which keys a query may see when no mask tensor was given: causal and/or a
sliding window. Used by the recording attention function (softcapped layers) and by every
recomputation in explorer.analyse, so the two can never disagree.
"""
from __future__ import annotations

import torch


def allowed_keys(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool,
                 sliding_window: int | None) -> torch.Tensor | None:
    """(b, n) bool: may query at absolute position q_pos[i] see the key at k_pos[j]? None when
    every key is allowed (full attention, no window).

    Causal: j ≤ i. Sliding window w: i − w < j (the query and the w − 1 keys before it), as
    transformers' sliding masks define it.
    """
    if not causal and not sliding_window:
        return None
    q = q_pos[:, None]                                                              # (b, 1)
    k = k_pos[None, :]                                                              # (1, n)
    allowed = k <= q if causal else torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=q.device)
    if sliding_window:
        allowed = allowed & (k > q - sliding_window)
    return allowed


def block_allowed(row0: int, row1: int, n_keys: int, offset: int, causal: bool, sliding_window: int | None,
                  device: torch.device | str) -> torch.Tensor | None:
    """allowed_keys for query rows [row0, row1) of a layer whose queries start `offset` keys in
    (T_k − T_q), against keys [0, n_keys)."""
    q_pos = torch.arange(row0, row1, device=device) + offset
    return allowed_keys(q_pos, torch.arange(n_keys, device=device), causal, sliding_window)


__all__ = ["allowed_keys", "block_allowed"]
