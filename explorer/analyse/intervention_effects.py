"""What an intervention changed: one forward with it against one without, at the last position.

Why the last position only: it is the prediction a person reads (the answer token); the model
projects only that position (`logits_to_keep=1`), so two forwards cost about one capture.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from explorer.record.intervention_hooks import intervene, last_logits
from explorer.record.interventions import HeadAblation, Intervention, to_short
from explorer.record.row_interventions import RowInterventions, row_safe


@dataclass
class Effect:
    """The answer token's logit and probability before and after, KL(plain ‖ intervened) in nats,
    and both top-k lists as (token id, probability)."""
    interventions: str            # short form, e.g. "h14.2,h20.5"
    target: int
    logit_before: float
    logit_after: float
    prob_before: float
    prob_after: float
    kl: float
    top_before: list[tuple[int, float]] = field(default_factory=list)
    top_after: list[tuple[int, float]] = field(default_factory=list)

    @property
    def logit_change(self) -> float:
        return self.logit_after - self.logit_before

    def to_dict(self) -> dict:
        return {"interventions": self.interventions, "target": self.target, "logit_before": self.logit_before,
                "logit_after": self.logit_after, "logit_change": self.logit_change, "prob_before": self.prob_before,
                "prob_after": self.prob_after, "kl": self.kl, "top_before": self.top_before,
                "top_after": self.top_after}


def _top(probs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    values, ids = probs.topk(min(k, probs.numel()))
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]


def compare_logits(before: torch.Tensor, after: torch.Tensor, specs: Sequence[Intervention],
                   target: int | None = None, k: int = 10) -> Effect:
    """Effect from two (V,) logit vectors; target defaults to the plain run's top token."""
    before, after = before.float().cpu(), after.float().cpu()
    target = int(before.argmax()) if target is None else int(target)
    logp, logq = before.log_softmax(-1), after.log_softmax(-1)
    kl = float((logp.exp() * (logp - logq)).sum())
    return Effect(to_short(specs), target, float(before[target]), float(after[target]), float(logp[target].exp()),
                  float(logq[target].exp()), max(kl, 0.0), _top(logp.exp(), k), _top(logq.exp(), k))


def forward_effect(model: torch.nn.Module, input_ids: torch.Tensor, specs: Sequence[Intervention],
                   target: int | None = None, k: int = 10) -> Effect:
    """The specs are checked (positions against the prompt) before either forward runs."""
    ids = input_ids.reshape(1, -1)
    with intervene(model, specs, length=ids.shape[1]):
        after = last_logits(model, ids)[0]
    before = last_logits(model, ids)[0]
    return compare_logits(before, after, specs, target, k)


@dataclass
class DirectIndirect:
    """Total effect of an ablation on the answer's logit, the part its direct attribution
    predicts (the heads' own writes into the logit removed), and the rest: the indirect effect,
    which goes through later layers (and the final norm's rescaling)."""
    total: float
    direct: float
    indirect: float


def direct_and_indirect(effect: Effect, heads_attribution: torch.Tensor,
                        specs: Sequence[Intervention]) -> DirectIndirect | None:
    """heads_attribution: (L, H) direct logit attribution of the same target on the plain run.
    Only zero- and scale-ablations of heads have a direct share this simple; None otherwise."""
    direct = 0.0
    for spec in specs:
        if not isinstance(spec, HeadAblation) or spec.mode == "mean":
            return None
        factor = 0.0 if spec.mode == "zero" else spec.factor
        direct += (factor - 1.0) * float(heads_attribution[spec.layer, spec.head])
    total = effect.logit_change
    return DirectIndirect(total, direct, total - direct)


def generate_with(loaded, messages, specs: Sequence[Intervention], options=None):
    """Generation with interventions applied to every step (a mean ablation keeps the prompt's mean).

    Row-local specs (record/row_interventions.row_safe) ride on the answer's row only, so the same
    answer can also be decoded in the worker's shared batch beside other sessions' rows (a
    WorkerStream with `edit=`). The others hook every row of every forward in this thread while
    they are on: run those as one model-worker call of their own, never batched with other prompts."""
    from explorer.model.generation import generate

    if row_safe(specs):
        return generate(loaded, messages, options, edit=RowInterventions(tuple(specs)))
    with intervene(loaded.model, specs):
        return generate(loaded, messages, options)


@dataclass
class AnswerPair:
    """The same conversation answered greedily with interventions (`changed`) and, when asked
    for, without (`plain`; None when the caller already holds a greedy plain answer)."""
    interventions: str            # short form
    changed: object               # GenerationResult
    plain: object | None = None   # GenerationResult


def answer_with(loaded, messages, specs: Sequence[Intervention], options=None, plain_too: bool = False) -> AnswerPair:
    """Greedy answers with the options of a plain one (sampling off: two sampled answers would
    differ with or without the interventions, and the comparison would say nothing).

    `plain_too`: also answer without them, for a plain answer that was sampled. Runs as one
    model-worker call (see generate_with for the specs whose hooks would see other sessions' rows)."""
    from explorer.model.generation import GenerateOptions, generate, generate_batch

    greedy = replace(options or GenerateOptions(), do_sample=False)
    if plain_too and row_safe(specs):     # both rows in one batch: one pass over the weights per token
        plain, changed = generate_batch(loaded, [messages, messages], greedy, [None, RowInterventions(tuple(specs))])
        return AnswerPair(to_short(specs), changed, plain)
    plain = generate(loaded, messages, greedy) if plain_too else None
    return AnswerPair(to_short(specs), generate_with(loaded, messages, specs, greedy), plain)


__all__ = ["AnswerPair", "DirectIndirect", "Effect", "answer_with", "compare_logits", "direct_and_indirect",
           "forward_effect", "generate_with"]
