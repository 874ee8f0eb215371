"""URL state of the internals page: a shared link restores the view; a hostile one is cut down to size."""
from __future__ import annotations

from explorer.views.url_state import MAX_PROMPT_CHARS, PARAMS, ViewState, changed_params, link_mismatch


def test_a_view_survives_the_round_trip_through_query_params():
    state = ViewState(model="SmolLM2", prompt="The capital of France is", source="chat", layer=12, head=4, token=-1,
                      view="lens")
    params = state.to_params()
    assert params == {"model": "SmolLM2", "prompt": "The capital of France is", "src": "chat", "layer": "12",
                      "head": "4", "token": "-1", "view": "lens"}
    back = ViewState.from_params(params)
    assert back == state and back.problems == []


def test_defaults_are_left_out_of_the_url():
    assert ViewState(prompt="hi").to_params() == {"prompt": "hi"}
    assert ViewState().to_params() == {}


def test_malformed_params_are_dropped_and_reported():
    state = ViewState.from_params({"layer": "abc", "head": "-2", "token": "1e3", "view": "<script>", "src": "evil",
                                   "model": ""})
    assert (state.layer, state.head, state.token, state.view, state.source, state.model) == \
        (None, None, None, "attention", "text", None)
    assert len(state.problems) == 5
    assert all(len(p) < 120 for p in state.problems)


def test_repeated_params_take_the_last_value():
    assert ViewState.from_params({"layer": ["3", "7"]}).layer == 7


def test_a_prompt_too_long_for_a_url_is_left_out_and_cut_when_read():
    long = "x" * (MAX_PROMPT_CHARS + 1)
    assert "prompt" not in ViewState(prompt=long, layer=2).to_params()
    state = ViewState.from_params({"prompt": long})
    assert len(state.prompt) == MAX_PROMPT_CHARS and state.problems


def test_clamp_fits_the_link_to_a_capture_that_kept_fewer_layers():
    state = ViewState(layer=14, head=40, token=-2)
    fitted = state.clamp(layers=[0, 10, 20, 29], num_heads=9, num_tokens=12)
    assert (fitted.layer, fitted.head, fitted.token) == (10, 8, 10)
    assert ViewState(token=500).clamp([0], 1, 12).token == 11
    assert ViewState(token=-50).clamp([0], 1, 12).token == 0


def test_only_changed_params_are_written_and_foreign_ones_are_kept():
    current = {"layer": "3", "head": "1", "utm_source": "mail", "view": "lens"}
    to_set, to_delete = changed_params(current, {"layer": "3", "head": "2"})
    assert to_set == {"head": "2"}
    assert to_delete == ["view"]
    assert set(PARAMS) >= {"model", "prompt", "layer", "head", "token"}


def test_a_link_names_the_precision_and_reads_it_back():
    state = ViewState(model="SmolLM2", precision="nf4", prompt="hi")
    assert state.to_params() == {"model": "SmolLM2", "precision": "nf4", "prompt": "hi"}
    assert ViewState.from_params({"model": "SmolLM2", "precision": "BF16 "}).precision == "bf16"


def test_a_precision_that_is_not_a_name_is_dropped_and_reported():
    state = ViewState.from_params({"precision": "<b>nf4</b>"})
    assert state.precision is None and state.problems == ["precision='<b>nf4</b>' is not a precision name"]


def test_a_link_made_in_another_precision_or_model_is_told_apart():
    link = ViewState(model="SmolLM2", precision="bf16")
    assert link_mismatch(link, "SmolLM2", "nf4") == "precision"
    assert link_mismatch(link, "SmolLM2", "bf16") is None
    assert link_mismatch(link, "Llama", "bf16") == "model"
    assert link_mismatch(ViewState(model="SmolLM2"), "SmolLM2", "nf4") is None      # an old link: no precision
    assert link_mismatch(link, "SmolLM2", None) is None                            # unknown side: no claim
