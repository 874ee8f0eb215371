"""Notes that stand next to a number when a setting outside the view changed it.

Why: the logit lens shows the model's raw next-token distribution, while the chat's answer was
chosen with a repetition penalty (or by sampling): after "Paris" the lens says "," and the answer
has ".". And a 4-bit model's numbers are not the reference model's: on a CPU, NF4 moved the
embedded model's next-token distribution by 1.41 nats of KL against bf16. A reader who is not told
trusts the wrong one, so the view says so beside the figure.
"""
from __future__ import annotations

from collections.abc import Iterable

from explorer.model.precisions import PRECISIONS

REFERENCE = "bf16"


def answer_choice_note(options) -> str | None:
    """A sentence when the answer's tokens were not the model's top guesses (`options`: the
    GenerateOptions that made it), else None."""
    if options is None:
        return None
    changed = []
    if getattr(options, "do_sample", False):
        changed.append(f"by sampling (temperature {options.temperature:g}, top-p {options.top_p:g}, "
                       f"top-k {options.top_k})")
    penalty = float(getattr(options, "repetition_penalty", 1.0))
    if abs(penalty - 1.0) > 1e-9:
        changed.append(f"with repetition penalty {penalty:g}")
    if not changed:
        return None
    return (f"The chat's answer was chosen {' and '.join(changed)}; the lens shows the model's raw next-token "
            "distribution, so its top guess can differ from the token the answer has.")


def matching_drift(runs: Iterable, model_name: str, precision: str):
    """The comparison run of this model in this precision that measured drift, or None (duck-typed
    RunRecords: views do not import the compare package)."""
    for r in runs or ():
        if r.drift is not None and (r.model_name or r.model) == model_name and \
                (r.loaded_precision or r.precision) == precision:
            return r
    return None


def precision_note(model_name: str, precision: str | None, runs: Iterable = ()) -> tuple[str, bool] | None:
    """(sentence, measured) for a capture of a quantized model: its drift from Compare when this
    session measured it, else what to do to see it. None for a precision that is its own reference."""
    spec = PRECISIONS.get(precision or "")
    if spec is None or not spec.weight_kind:
        return None
    run = matching_drift(runs, model_name, precision)
    if run is not None:
        d = run.drift
        return (f"{precision} weights change this model's outputs: next-token KL {d.kl_mean:.3g} nats and "
                f"{d.top1_agreement:.0%} top-1 agreement against {d.reference} (from Compare, on its prompts).", True)
    return (f"These numbers are the {precision} model's; quantized weights move them away from the {REFERENCE} "
            f"model's. Compare against {REFERENCE} to see how much.", False)


__all__ = ["REFERENCE", "answer_choice_note", "matching_drift", "precision_note"]
