"""answer_with on the embedded NF4 model: greedy whatever the options said, the plain answer too
when asked (a sampled chat answer is no baseline), and no hook left behind."""
from __future__ import annotations

import pytest

from explorer.analyse.intervention_effects import answer_with
from explorer.model.generation import GenerateOptions, conversation, generate
from explorer.record.interventions import parse

pytestmark = pytest.mark.slow


def test_answer_with_is_greedy_and_answers_plain_too_when_asked(embedded_nf4):
    messages = conversation("Name a colour.")
    sampled = GenerateOptions(max_new_tokens=8, do_sample=True, temperature=1.5, repetition_penalty=1.1)
    greedy = GenerateOptions(max_new_tokens=8, repetition_penalty=1.1)
    specs = parse(",".join(f"h0.{h}" for h in range(9)))
    pair = answer_with(embedded_nf4, messages, specs, sampled, plain_too=True)
    plain = generate(embedded_nf4, messages, greedy).text
    assert pair.plain is not None and pair.plain.text == plain            # greedy, not sampled
    assert pair.changed.text == answer_with(embedded_nf4, messages, specs, greedy).changed.text
    assert pair.changed.text != plain and pair.interventions == "h0.0,h0.1,h0.2,h0.3,h0.4,h0.5,h0.6,h0.7,h0.8"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in embedded_nf4.model.modules())
