"""Interventions on one row of a shared decode batch: an answer with heads off decoded in the same
forwards as other sessions' plain answers, so a teacher's ablation does not pause the class.

Why only some interventions: a zero- or scale-ablated head, a scaled neuron and a skipped block
change each position of their row from that position alone, so hooks on the row's slice of the
batch change that row and nothing else, and a padded position they touch is masked anyway. A mean
ablation averages over the prompt's positions (a left-padded prefill would count the padding) and
a patch copies from another run: those still run as a model call of their own
(analyse/intervention_effects.generate_with), with hooks on every row.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from explorer.record.hooks import forward_hooks
from explorer.record.intervention_hooks import registrations, sites_of, validate
from explorer.record.interventions import BadIntervention, HeadAblation, Intervention, NeuronAblation, SkipBlock


def row_safe(specs: Sequence[Intervention]) -> bool:
    """True when every spec acts position by position on its own row (see the module's docstring)."""
    return bool(specs) and all(isinstance(s, NeuronAblation | SkipBlock) or
                               (isinstance(s, HeadAblation) and s.mode != "mean") for s in specs)


@dataclass(frozen=True)
class RowInterventions:
    """A decode row's edit (explorer/model/decode_batch.RowEdit): these specs on that row only."""
    specs: tuple[Intervention, ...]

    def __post_init__(self) -> None:
        if not row_safe(self.specs):
            raise BadIntervention("Only zero or scale head ablations, neuron ablations and skipped blocks can "
                                  "ride a shared batch; a mean ablation or a patch runs on its own.")

    def check(self, model: nn.Module) -> None:
        validate(model, self.specs)

    def applied(self, model: nn.Module, row: int) -> contextlib.AbstractContextManager:
        return forward_hooks(registrations(sites_of(model), [(spec, row) for spec in self.specs], None))


__all__ = ["RowInterventions", "row_safe"]
