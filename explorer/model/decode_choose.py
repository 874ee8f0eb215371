"""The next token of every row of a decode step, each with its own settings, in one pass over the batch.

Why one pass: a step of 16-32 rows that chose its tokens row by row paid a Python loop, a copy of
the logits and a device sync (`int(argmax)`) per row, which on a GPU grows the step with the class.
Here every greedy row is one `argmax` over the batch, sampling rows with the same settings share
their warpers and one `multinomial`, and all tokens come back in one `.tolist()`.

The order is transformers' generate's: repetition penalty, min length (stop ids banned), then the
warpers (temperature, top-k, top-p). Every operation is elementwise or per row, so a row's token
does not depend on the other rows: greedy in a batch is greedy alone.
"""
from __future__ import annotations

from typing import Any

import torch

Row = Any   # explorer.model.decode_batch.Row (not imported: decode_batch imports this module)


def _penalise(scores: torch.Tensor, rows: list[Row], index: list[int]) -> None:
    """Repetition penalty, in place, for the rows at `index`: every id a row has seen (prompt and answer)."""
    seen = [sorted(set(rows[i].ids)) for i in index]
    width = max(len(s) for s in seen)
    ids = torch.tensor([s + s[:1] * (width - len(s)) for s in seen], device=scores.device)   # (R, W), padded with a repeat
    at = torch.tensor(index, device=scores.device)
    penalty = torch.tensor([rows[i].options.repetition_penalty for i in index], device=scores.device,
                           dtype=scores.dtype)[:, None]                                     # (R, 1)
    sub = scores[at]                                                                        # (R, V)
    picked = sub.gather(1, ids)                                                             # (R, W)
    sub.scatter_(1, ids, torch.where(picked < 0, picked * penalty, picked / penalty))
    scores[at] = sub


def _ban_stop(scores: torch.Tensor, rows: list[Row], stop: set[int]) -> None:
    """Rows still short of their min_new_tokens cannot pick a stop id."""
    short = [i for i, r in enumerate(rows)
             if r.options.min_new_tokens and len(r.new) < min(r.options.min_new_tokens, r.prepared.max_new_tokens)]
    if short and stop:
        at = torch.tensor(short, device=scores.device)[:, None]                 # (R, 1)
        ids = torch.tensor(sorted(stop), device=scores.device)[None, :]         # (1, S)
        scores[at, ids] = -float("inf")


def _sampled(scores: torch.Tensor, rows: list[Row], index: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Sample the rows at `index`, grouped by identical settings; returns (tokens, their rows)."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    groups: dict[tuple, list[int]] = {}
    for i in index:
        o = rows[i].options
        groups.setdefault((o.temperature, o.top_k, o.top_p), []).append(i)
    tokens, order = [], []
    for (temperature, top_k, top_p), members in groups.items():
        try:
            warpers = [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None,
                       TopPLogitsWarper(top_p) if top_p < 1.0 else None]
        except Exception as exc:  # noqa: BLE001 - a bad setting fails these rows only
            for i in members:
                rows[i].error = exc
            continue
        batch = scores[torch.tensor(members, device=scores.device)]             # (G, V)
        for warper in warpers:
            if warper is not None:
                batch = warper(None, batch)
        tokens.append(torch.multinomial(torch.softmax(batch, dim=-1), 1)[:, 0])  # (G,)
        order += members
    return (torch.cat(tokens) if tokens else scores.new_zeros(0, dtype=torch.long)), order


def choose_all(rows: list[Row], logits: torch.Tensor, stop: set[int]) -> list[int | None]:
    """The next token of each row from the step's (B, V) fp32 logits; None for a row whose settings
    failed (its `error` is set)."""
    scores = logits.clone()                                                     # (B, V)
    penalised = [i for i, r in enumerate(rows) if r.options.repetition_penalty != 1.0]
    if penalised:
        _penalise(scores, rows, penalised)
    _ban_stop(scores, rows, stop)
    sampling = [i for i, r in enumerate(rows) if r.options.do_sample]
    if not sampling:
        return scores.argmax(dim=-1).tolist()
    chosen = scores.argmax(dim=-1)                                              # (B,) greedy for every row
    tokens, order = _sampled(scores, rows, sampling)
    if order:
        chosen[torch.tensor(order, device=chosen.device)] = tokens
    failed = {i for i in sampling if i not in order}
    return [None if i in failed else t for i, t in enumerate(chosen.tolist())]


def choose(row: Row, logits: torch.Tensor, stop: set[int]) -> int:
    """The next token of one row from its (V,) fp32 logits (a batch of one)."""
    token = choose_all([row], logits[None], stop)[0]
    if token is None:
        raise row.error
    return token


__all__ = ["choose", "choose_all"]
