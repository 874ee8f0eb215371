"""The chat panel's "Answer again with heads … off" (AppTest, the embedded NF4 model on the worker):
the offer appears once the Intervene view's interventions are active, its answer is the greedy
answer with those heads off, shown beside the plain one, and the model is left without hooks."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.model.generation import GenerateOptions, conversation, generate
from explorer.record.intervention_hooks import intervene
from explorer.record.interventions import parse

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "chat.py")
HEADS = ",".join(f"h{layer}.{head}" for layer in (0, 1) for head in range(9))   # two whole layers' heads
QUESTION = "What is the capital of France?"

pytestmark = pytest.mark.slow


def test_the_chat_answers_again_with_heads_off_beside_the_plain_answer(monkeypatch, registry_with, embedded_nf4):
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    registry_with(embedded_nf4)
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    at.slider(key="chat_max_new").set_value(12).run()
    at.chat_input(key="chat_input").set_value(QUESTION).run()
    assert not at.exception
    plain = at.session_state["chat_messages"][-1]["content"]
    assert not [b for b in at.button if b.key == "chat_ablate_answer"]   # nothing is active: no offer

    at.session_state["chat_ablation_active"] = HEADS                    # what the Intervene view sets
    at.run()
    offer = at.button(key="chat_ablate_answer")
    assert offer.label.startswith("Answer again with heads 0.0, 0.1") and offer.label.endswith("and 1.8 off")
    offer.click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    pair = at.session_state["chat_ablation_answer"][1]
    assert pair.plain is None                                         # the chat's answer was greedy already
    options = GenerateOptions(max_new_tokens=12, repetition_penalty=1.1)
    with intervene(embedded_nf4.model, parse(HEADS)):             # hooks on the whole model, decoded alone
        want = generate(embedded_nf4, conversation(QUESTION), options).text
    assert pair.changed.text == want and want != plain
    shown = [" ".join(t.value.split()) for t in at.text]                # st.text dedents each line
    assert " ".join(plain.split()) in shown and " ".join(want.split()) in shown   # side by side under the chat
    assert any("With heads 0.0" in m.value for m in at.markdown)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in embedded_nf4.model.modules())
    assert generate(embedded_nf4, conversation(QUESTION), options).text == plain   # the plain answer is intact
