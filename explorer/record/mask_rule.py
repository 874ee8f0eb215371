"""The one rule for which keys a query may see when no mask tensor was given: causal and/or a
sliding window. Used by the recording attention function (softcapped layers) and by every
recomputation in explorer.analyse (maps, summaries, routes), so they can never disagree.
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


def visible_span(row0: int, row1: int, n_keys: int, offset: int, causal: bool,
                 sliding_window: int | None) -> tuple[int, int]:
    """[lo, hi): the keys that any query row of [row0, row1) may see under the rule above (queries
    start `offset` keys in), so recomputation can skip the key tiles no row of a block sees. Never
    empty: at least one key, as every query sees itself."""
    hi = min(n_keys, row1 + offset) if causal else n_keys
    lo = max(0, row0 + offset - sliding_window + 1) if sliding_window else 0
    return lo, max(hi, lo + 1)


__all__ = ["allowed_keys", "block_allowed", "visible_span"]
