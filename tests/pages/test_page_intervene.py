"""The Intervene view (AppTest) on a tiny resident model: heads pre-filled from the attribution,
the answer's probability beside the plain run's, the direct/indirect split, the link's `iv=`,
and a bad spec as a message with the model left as it was."""
from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
from explorer.record.intervention_hooks import last_logits
from tests.pages.internals_page import PAGE, page_with
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def model():
    m = tiny_model("llama")
    with torch.no_grad():                      # random init writes little through attention: make it matter
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight.mul_(40)
    return m


@pytest.fixture
def resident(model, registry_with, embedded_tokenizer, monkeypatch):
    """The tiny model lent to the app's registry (the worker wants a tokenizer; unused here)."""
    from explorer.model.loading import LoadConfig, LoadedModel

    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    loaded = LoadedModel(model=model, tokenizer=embedded_tokenizer, config=LoadConfig(source="tiny", precision="fp32"),
                         name="tiny-llama", source_kind="folder", precision="fp32", load_seconds=0.0,
                         footprint_bytes=0, device_map={})
    registry_with(loaded)
    return loaded


@pytest.fixture(scope="module")
def cap(model):
    ids = torch.randint(5, 250, (12,), generator=torch.Generator().manual_seed(4)).tolist()
    return capture(model, None, ids, CaptureOptions(parts=DEFAULT_PARTS | {"components"}))


def _open(cap, model) -> AppTest:
    at = page_with(cap, model=model)
    at.segmented_control(key="internals_view").set_value("intervene").run()
    assert not at.exception, at.exception
    return at


def test_intervene_runs_the_top_heads_off_and_reports_the_change(resident, model, cap):
    at = _open(cap, model)
    heads = at.multiselect(key="internals_iv_heads").value
    assert heads, "pre-filled from the attribution ranking"
    from explorer.analyse.attribution import direct_logit_attribution
    att = direct_logit_attribution(cap.components, cap.num_tokens - 1)
    top = max(((l, h) for l in range(3) for h in range(4)), key=lambda lh: float(att.heads[lh]))
    assert f"{top[0]}.{top[1]}" == heads[0]
    at.button(key="internals_iv_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = {m.label: m.value for m in at.metric}
    plain = next(v for k, v in labels.items() if k.endswith("plain"))
    after = next(v for k, v in labels.items() if k.endswith("with interventions"))
    assert plain != after
    assert any("indirect" in str(df.value) for df in at.dataframe)
    assert not any(v is None for df in at.dataframe for v in df.value.to_numpy().ravel())   # gaps show as "—"
    assert at.query_params["iv"] == ",".join(f"h{x}" for x in heads)


@pytest.mark.parametrize("more", ["skip:mlp0", "mean:h2.1"])
def test_generate_with_interventions_shows_both_answers_from_the_worker(tiny_folder, registry_with, monkeypatch, more):
    """Row-local specs decode as rows of the worker's shared batch; a mean ablation runs as a call of its
    own. Either way each answer is the one decoded alone (hooks on the whole model for the changed one).
    A tiny model saved with the embedded tokenizer: the answers are decoded from a real chat prompt."""
    from explorer.model.generation import GenerateOptions, conversation, generate
    from explorer.model.loading import LoadConfig, load_model
    from explorer.record.intervention_hooks import intervene
    from explorer.record.interventions import parse

    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    loaded = load_model(LoadConfig(source=str(tiny_folder), precision="fp32"))
    registry_with(loaded)
    prompt = "The capital of France is"
    at = page_with(capture(loaded.model, loaded.tokenizer, prompt, CaptureOptions(parts=DEFAULT_PARTS | {"components"})),
                   model=loaded.model, prompt=prompt)
    at.segmented_control(key="internals_view").set_value("intervene").run()
    at.multiselect(key="internals_iv_heads").set_value(["0.1", "1.2"]).run()
    at.text_input(key="internals_iv_more").set_value(more).run()
    at.button(key="internals_iv_gen").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    shown = [" ".join(t.value.split()) for t in at.text]                # st.text dedents each line
    options = GenerateOptions(max_new_tokens=48)
    plain = generate(loaded, conversation(prompt), options).text
    with intervene(loaded.model, parse(f"h0.1,h1.2,{more}")):
        changed = generate(loaded, conversation(prompt), options).text
    assert plain != changed and " ".join(plain.split()) in shown and " ".join(changed.split()) in shown
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.model.modules())


def test_a_bad_spec_is_a_message_and_the_model_is_untouched(resident, model, cap):
    before = last_logits(model, cap.token_ids)
    at = _open(cap, model)
    at.text_input(key="internals_iv_more").set_value("h7.0").run()
    assert not at.exception
    assert any("layers 0 to 2" in e.value for e in at.error)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(last_logits(model, cap.token_ids), before, rtol=0, atol=0)


def test_a_link_with_interventions_fills_the_view(resident, model, cap):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["iv"] = "h1.2,skip:mlp0"
    from explorer.views.readout import Readout
    from pages import _state
    from pages._internals.on_screen import OnScreen
    at.session_state[_state.ON_SCREEN] = OnScreen(Readout(cap, model), "x", "text", "test")
    at.session_state[_state.TOKEN] = cap.num_tokens - 1
    at.session_state[_state.LAYER] = 1
    at.session_state[_state.HEAD] = 0
    at.session_state[_state.LINK_READ] = True
    at.session_state[_state.VIEW] = "intervene"
    at.run()
    assert not at.exception
    assert at.multiselect(key="internals_iv_heads").value == ["1.2"]
    assert at.text_input(key="internals_iv_more").value == "skip:mlp0"


def test_a_capture_under_interventions_says_which_applied(resident, model, cap):
    at = _open(cap, model)
    at.multiselect(key="internals_iv_heads").set_value(["0.1"]).run()
    at.button(key="internals_iv_capture").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from pages import _state
    taken = at.session_state[_state.ON_SCREEN].readout.capture
    assert "taken with interventions: h0.1" in taken.notes
    from explorer.record.interventions import HeadAblation, interventions_of
    assert interventions_of(taken.notes) == [HeadAblation(0, 1)]
    assert not torch.equal(taken.residual[-1], cap.residual[-1])          # it ran with the head off
    assert any("Taken with interventions: h0.1" in i.value.replace("\\", "") for i in at.info), [i.value for i in at.info]
    assert not any("Reduced capture" in w.value for w in at.warning)      # not mistaken for a reduced capture
    assert at.query_params["iv"] == "h0.1"


def test_ablate_this_head_in_the_attribution_view_opens_intervene_with_it(resident, model, cap):
    from tests.pages.internals_page import page_with as page_in

    at = page_in(cap, "attribution", model=model)
    assert not at.exception, at.exception
    at.button(key="internals_ablate_selected").click().run()        # the selected head: layer 1, head 0
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["internals_view"] == "intervene"
    assert at.multiselect(key="internals_iv_heads").value == ["1.0"]
    assert at.query_params["iv"] == "h1.0"
    assert at.session_state["chat_ablation_active"] == "h1.0"        # the chat panel offers it
    labels = {m.label: m.value for m in at.metric}                    # it ran at once: plain beside with
    assert any(k.endswith("plain") for k in labels) and any(k.endswith("with interventions") for k in labels)
    effect = at.session_state["internals_iv_effect"][2]
    from explorer.analyse.intervention_effects import forward_effect
    from explorer.record.interventions import HeadAblation
    want = forward_effect(model, cap.token_ids, [HeadAblation(1, 0)])
    assert effect.interventions == "h1.0" and effect.prob_after == pytest.approx(want.prob_after, abs=1e-6)

    at.segmented_control(key="internals_view").set_value("attribution").run()
    at.session_state["internals_head"] = 2
    at.run()
    at.button(key="internals_ablate_selected").click().run()        # a second head joins the first
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.multiselect(key="internals_iv_heads").value == ["1.0", "1.2"]
    assert at.query_params["iv"] == "h1.0,h1.2"


def test_a_link_of_a_capture_under_interventions_captures_under_them_again(monkeypatch, tiny_folder, empty_registry):
    """The URL of a capture taken under interventions holds them (`ivcap=`); opening it captures the
    prompt under them again, and its notes, caption and URL say so."""
    from explorer.model.loading import LoadConfig
    from explorer.record.interventions import HeadAblation, interventions_of
    from pages import _state

    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    loaded = empty_registry.load(LoadConfig(source=tiny_folder, precision="fp32"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    for k, v in {"model": loaded.name, "precision": "fp32", "prompt": "The capital of France is", "src": "text",
                 "view": "intervene", "ivcap": "h1.2"}.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    cur = at.session_state[_state.ON_SCREEN]
    assert interventions_of(cur.readout.capture.notes) == [HeadAblation(1, 2)]
    assert cur.origin == "shared link with h1.2"
    assert any("Taken with interventions: h1.2" in i.value.replace("\\", "") for i in at.info)
    assert at.query_params["ivcap"] in ("h1.2", ["h1.2"])

    at.text_area(key=_state.PROMPT).set_value("The capital of Italy is").run()   # a plain capture drops it
    next(b for b in at.button if b.label == "Capture this prompt").click().run()
    assert not at.exception
    assert interventions_of(at.session_state[_state.ON_SCREEN].readout.capture.notes) == []
    assert "ivcap" not in at.query_params
