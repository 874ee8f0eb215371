"""Interventions as data: small frozen specs that say what to change in a forward, nothing else.

Why data and not callables: a spec goes into a shareable URL, a CLI flag, a JSON file and a
capture's metadata, and is checked against the model before any hook exists. The short form is
one token per spec, comma separated:

    h14.2          zero-ablate head 2 of layer 14        h14.2x0.5   scale it by 0.5
    mean:h3.1      replace its output by its mean over the prompt's positions
    n5.120         zero MLP neuron 120 of layer 5        n5.120x2    scale it by 2
    skip:attn5     layer 5's attention adds nothing      skip:mlp7   layer 7's MLP adds nothing
    patch:r5@3     residual after layer 5 at position 3, from another run
    patch:h5.2@3   head 2 of layer 5 at position 3, from another run
    patch:h5.2     head 2 of layer 5 at every position (patch:r5: the whole residual after layer 5)

Hooks that apply them are in record/intervention_hooks.py.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from explorer.model.errors import ExplorerError


class BadIntervention(ExplorerError, ValueError):
    """An intervention that cannot apply to this model or prompt; nothing was changed."""


@dataclass(frozen=True)
class HeadAblation:
    """A head's output (its slice of the attention output projection's input), zeroed, scaled or
    replaced by its mean over the prompt's positions."""
    layer: int
    head: int
    mode: str = "zero"            # "zero" | "scale" | "mean"
    factor: float = 0.0           # used by "scale"

    def short(self) -> str:
        if self.mode == "mean":
            return f"mean:h{self.layer}.{self.head}"
        if self.mode == "scale":
            return f"h{self.layer}.{self.head}x{self.factor:g}"
        return f"h{self.layer}.{self.head}"


@dataclass(frozen=True)
class NeuronAblation:
    """One MLP neuron (an input of the MLP's down projection), zeroed or scaled."""
    layer: int
    neuron: int
    factor: float = 0.0

    def short(self) -> str:
        return f"n{self.layer}.{self.neuron}" + (f"x{self.factor:g}" if self.factor != 0 else "")


@dataclass(frozen=True)
class SkipBlock:
    """A layer's attention or MLP block contributes nothing (its output is zero)."""
    layer: int
    block: str                    # "attn" | "mlp"

    def short(self) -> str:
        return f"skip:{self.block}{self.layer}"


@dataclass(frozen=True)
class Patch:
    """An activation copied from another run of a prompt of the same length: the residual stream
    after `layer` at `position` (site "resid"), or one head's output there (site "head");
    position None: at every position."""
    site: str                     # "resid" | "head"
    layer: int
    position: int | None
    head: int | None = None

    def short(self) -> str:
        at = "" if self.position is None else f"@{self.position}"
        if self.site == "head":
            return f"patch:h{self.layer}.{self.head}{at}"
        return f"patch:r{self.layer}{at}"


Intervention = HeadAblation | NeuronAblation | SkipBlock | Patch
KINDS = {"head": HeadAblation, "neuron": NeuronAblation, "skip": SkipBlock, "patch": Patch}
_KIND_OF = {cls: name for name, cls in KINDS.items()}

_NUM = r"(\d+)"


def _opt(group: str | None) -> int | None:
    return None if group is None else int(group)


_FACTOR = r"(?:x(-?\d+(?:\.\d*)?(?:e-?\d+)?))?"
_PATTERNS = (
    (re.compile(rf"mean:h{_NUM}\.{_NUM}"), lambda m: HeadAblation(int(m[1]), int(m[2]), "mean")),
    (re.compile(rf"h{_NUM}\.{_NUM}{_FACTOR}"),
     lambda m: HeadAblation(int(m[1]), int(m[2]), "scale", float(m[3])) if m[3] is not None
     else HeadAblation(int(m[1]), int(m[2]))),
    (re.compile(rf"n{_NUM}\.{_NUM}{_FACTOR}"),
     lambda m: NeuronAblation(int(m[1]), int(m[2]), float(m[3]) if m[3] is not None else 0.0)),
    (re.compile(rf"skip:(attn|mlp){_NUM}"), lambda m: SkipBlock(int(m[2]), m[1])),
    (re.compile(rf"patch:r{_NUM}(?:@{_NUM})?"), lambda m: Patch("resid", int(m[1]), _opt(m[2]))),
    (re.compile(rf"patch:h{_NUM}\.{_NUM}(?:@{_NUM})?"), lambda m: Patch("head", int(m[1]), _opt(m[3]), int(m[2]))),
    (re.compile(rf"{_NUM}\.{_NUM}"), lambda m: HeadAblation(int(m[1]), int(m[2]))),   # CLI's --ablate 14.2
)
MAX_SPECS = 256      # a URL or a form holds a handful; a long list is a mistake or an attack


def parse_one(text: str) -> Intervention:
    token = text.strip().lower()
    for pattern, make in _PATTERNS:
        m = pattern.fullmatch(token)
        if m:
            return make(m)
    raise BadIntervention(f"{text.strip()[:40]!r} is not an intervention (examples: h14.2, h14.2x0.5, "
                          "mean:h3.1, n5.120, skip:attn5, skip:mlp7, patch:r5@3).")


def parse(text: str) -> list[Intervention]:
    """Comma-separated short forms, in order; an empty string is no intervention."""
    parts = [p for p in (text or "").split(",") if p.strip()]
    if len(parts) > MAX_SPECS:
        raise BadIntervention(f"{len(parts)} interventions are more than the {MAX_SPECS} allowed at once.")
    return [parse_one(p) for p in parts]


def to_short(specs: Sequence[Intervention]) -> str:
    return ",".join(s.short() for s in specs)


def to_json(specs: Sequence[Intervention]) -> str:
    return json.dumps([{"kind": _KIND_OF[type(s)], **asdict(s)} for s in specs])


def from_json(text: str | list) -> list[Intervention]:
    """The list to_json wrote (or its parsed form); anything else is a BadIntervention."""
    try:
        rows = json.loads(text) if isinstance(text, str) else text
        if not isinstance(rows, list):
            raise TypeError("not a list")
        out = []
        for row in rows[: MAX_SPECS + 1]:
            row = dict(row)
            cls = KINDS[row.pop("kind")]
            out.append(cls(**row))
    except (ValueError, TypeError, KeyError) as exc:
        raise BadIntervention(f"The interventions file is not a list of interventions ({exc}).") from None
    if len(out) > MAX_SPECS:
        raise BadIntervention(f"More than {MAX_SPECS} interventions at once.")
    return out


NOTE_PREFIX = "taken with interventions: "


def capture_note(specs: Sequence[Intervention]) -> str:
    """The note a capture taken under interventions keeps: its caption shows it, its file saves it."""
    return NOTE_PREFIX + to_short(specs)


def interventions_of(notes: Sequence[str]) -> list[Intervention]:
    """The interventions a capture was taken with, read back from its notes ([] for a plain one)."""
    for note in notes:
        if note.startswith(NOTE_PREFIX):
            return parse(note[len(NOTE_PREFIX):])
    return []


def describe(specs: Sequence[Intervention]) -> str:
    """A caption: "with h14.2, skip:mlp7" (empty for none)."""
    return f"with {', '.join(s.short() for s in specs)}" if specs else ""


__all__ = ["NOTE_PREFIX", "BadIntervention", "capture_note", "interventions_of", "HeadAblation", "Intervention", "NeuronAblation", "Patch", "SkipBlock", "describe",
           "from_json", "parse", "parse_one", "to_json", "to_short"]
