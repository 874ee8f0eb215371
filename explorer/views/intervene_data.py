"""What the Intervene view reads: the heads to offer first, and an Effect as rows and sentences.

Why here and not in the page: the view's numbers (direct vs indirect, the ranking the heads come from) are testable without Streamlit.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from explorer.analyse.attribution import Attribution
from explorer.analyse.intervention_effects import DirectIndirect, Effect
from explorer.record.interventions import HeadAblation, Intervention


def head_label(layer: int, head: int) -> str:
    return f"{layer}.{head}"


def ranked_heads(att: Attribution | None, top: int = 3) -> list[str]:
    """The heads that push the answer up most, as "layer.head" labels (the attribution ranking)."""
    if att is None:
        return []
    rows = [r for r in att.ranked(10 * top) if r["part"] == "head" and r["value"] > 0]
    return [head_label(r["layer"], r["head"]) for r in rows[:top]]


def heads_from_labels(labels: Sequence[str]) -> list[HeadAblation]:
    return [HeadAblation(*map(int, label.split("."))) for label in labels]


def spoken(specs: Sequence[Intervention]) -> str:
    """How a person says the interventions: "heads 14.2 and 20.5 off" when they are all heads
    turned off, else their short forms ("h3.1x0.5, skip:mlp7")."""
    if specs and all(isinstance(s, HeadAblation) and s.mode == "zero" for s in specs):
        labels = [head_label(s.layer, s.head) for s in specs]
        if len(labels) == 1:
            return f"head {labels[0]} off"
        return f"heads {', '.join(labels[:-1])} and {labels[-1]} off"
    return ", ".join(s.short() for s in specs)


def with_head(specs: Sequence[Intervention], layer: int, head: int) -> list[Intervention]:
    """`specs` with head (layer, head) turned off: added once, in place of a scaling or mean of it."""
    new = HeadAblation(layer, head)
    if new in specs:
        return list(specs)
    return [s for s in specs if not (isinstance(s, HeadAblation) and (s.layer, s.head) == (layer, head))] + [new]


def effect_rows(effect: Effect, decode: Callable[[int], str]) -> list[dict]:
    """Top tokens of both runs, one row per token: probability plain, with, and the change."""
    before, after = dict(effect.top_before), dict(effect.top_after)
    ids = list(dict.fromkeys([i for i, _ in effect.top_before] + [i for i, _ in effect.top_after]))
    return [{"token": decode(i), "plain": before.get(i), "with interventions": after.get(i),
             "change": (after[i] - before[i]) if i in after and i in before else None} for i in ids]


def split_rows(split: DirectIndirect) -> list[dict]:
    return [
        {"effect on the answer's logit": "total (measured with the interventions)", "logit": split.total},
        {"effect on the answer's logit": "direct (their attribution: what they wrote straight into it)",
         "logit": split.direct},
        {"effect on the answer's logit": "indirect = total − direct (through later layers and the final norm)",
         "logit": split.indirect},
    ]


__all__ = ["effect_rows", "head_label", "heads_from_labels", "ranked_heads", "split_rows", "spoken", "with_head"]
