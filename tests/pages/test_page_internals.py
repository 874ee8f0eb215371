"""AppTest for pages/internals.py: every view draws its figures at the capture's dimensions, switches
redraw without a model run, a saved file opens without a model, and (slow) the embedded model is
captured from a shared link and under a memory budget."""
from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import AutoModelForCausalLM

from explorer.analyse.capture_bundle import open_with_results
from explorer.record.capture import DEFAULT_PARTS, Capture, CaptureOptions, capture
from explorer.views.readout import Readout
from tests.pages.internals_page import PAGE, page_with, shape, specs, title_starting
from tests.tiny_models import tiny_config, tiny_model

T = 24


@pytest.fixture(scope="module")
def tiny_llama():
    """Kept alive for the module: a Readout holds its model only by weak reference."""
    return tiny_model("llama")


@pytest.fixture(scope="module")
def tiny_capture(tiny_llama) -> Capture:
    cap = capture(tiny_llama, None, list(range(5, 5 + T)), CaptureOptions(parts=DEFAULT_PARTS | {"components"}))
    cap.token_texts[2] = "<script>alert(1)</script>"
    return cap


def test_every_view_draws_its_figures_at_the_captures_dimensions(no_model, tiny_llama, tiny_capture):
    at = page_with(tiny_capture, model=tiny_llama)
    assert not at.exception and not at.error
    figs = specs(at)
    assert shape(figs["Layer 1 · head 0 (KV head 0)"]) == (T, T)
    assert shape(figs[title_starting(at, "Attention from token 23")]) == (3, T)
    assert "4 query heads → 2 KV heads" in figs[title_starting(at, "GQA")]["layout"]["title"]["text"]
    assert title_starting(at, "All layers × heads")

    at.segmented_control(key="internals_w_more").set_value("Head summaries").run()
    for name in ("Entropy (nats)", "First-token share", "Look-back distance (tokens)"):
        assert shape(specs(at)[name]) == (4, 3)                # a row per head, a column per layer

    at.segmented_control(key="internals_view").set_value("residual").run()
    figs = specs(at)
    assert shape(figs[title_starting(at, "Residual norm after each layer")]) == (4, T)
    assert len(figs[title_starting(at, "What each layer adds")]["data"][0]["x"]["bdata"]) > 0
    assert title_starting(at, "Norm modules across layers")
    assert shape(figs[title_starting(at, "Learned gain")]) == (7, 64)

    at.segmented_control(key="internals_view").set_value("embeddings").run()
    figs = specs(at)
    assert set(figs) >= {"Input embeddings", "Hidden states after layer 1"}

    at.segmented_control(key="internals_view").set_value("lens").run()
    assert shape(specs(at)[title_starting(at, "Logit lens")]) == (3, 16)
    assert title_starting(at, "Final prediction at position 23")

    at.segmented_control(key="internals_view").set_value("glossary").run()
    assert any("Residual stream" in m.value for m in at.markdown)
    assert not at.exception


def test_switching_layer_head_and_token_redraws_the_views(no_model, tiny_llama, tiny_capture):
    at = page_with(tiny_capture, model=tiny_llama)
    at.select_slider(key="internals_layer").set_value(2).run()
    at.selectbox(key="internals_head").set_value(3).run()
    assert "Layer 2 · head 3 (KV head 1)" in specs(at)
    at.select_slider(key="internals_token").set_value(7).run()
    assert title_starting(at, "Attention from token 7")
    strip = specs(at)[title_starting(at, "24 tokens")]
    colors = strip["data"][0]["marker"]["color"]
    assert colors[7] != colors[6]                                 # the focused token is highlighted
    params = at.query_params
    assert (params["layer"], params["head"], params["token"]) in ((["2"], ["3"], ["7"]), ("2", "3", "7"))


def test_hostile_token_text_reaches_the_page_only_escaped(no_model, tiny_llama, tiny_capture):
    at = page_with(tiny_capture, model=tiny_llama)
    raw = "".join(el.proto.spec for el in at.get("plotly_chart"))
    assert "<script>" not in raw and "&lt;script&gt;" in raw


def test_the_guided_tour_walks_from_tokens_to_where_the_answer_came_from(no_model, tiny_llama, tiny_capture):
    at = page_with(tiny_capture, model=tiny_llama)
    at.segmented_control(key="internals_view").set_value("tour").run()
    assert any("**24 tokens**" in m.value for m in at.markdown)  # the tour quotes this capture
    seen = []
    for i in range(11):
        seen.append(next(h.value for h in at.subheader if " · " in h.value))
        assert not at.exception and not [i for i in at.info if "does not hold" in i.value], seen[-1]
        if seen[-1].startswith("10 · The LM head"):
            assert title_starting(at, "Final prediction")
        if i < 10:                                                 # on the last step "Next" is disabled
            at.button(key="internals_tour_next").click().run()
    assert seen[0].startswith("1 · Tokens") and seen[-1].startswith("11 · Where the answer came from")
    assert title_starting(at, "Direct contribution to the logit")


def test_a_long_prompt_is_pooled_with_a_notice_and_a_window_gives_full_resolution(no_model):
    config = tiny_config("llama")
    config.max_position_embeddings = 2048
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    cap = capture(model, None, torch.randint(3, 250, (700,)).tolist())
    at = page_with(cap)
    assert any("block-pooled" in c.value for c in at.caption)
    pooled = title_starting(at, "Layer 1 · head 0 (KV head 0) · pooled 2 tokens per cell")
    assert shape(specs(at)[pooled]) == (350, 350)
    at.toggle(key="internals_w_fullres").set_value(True).run()
    title = title_starting(at, "Layer 1 · head 0 (KV head 0) · full resolution")
    assert shape(specs(at)[title]) == (128, 128)
    assert "html" not in specs(at)[title]                          # a window this size keeps hover and zoom
    # "what does position 600 attend to?": the window moves to any query (and key) position typed
    at.number_input(key="internals_w_q_end").set_value(600).run()
    moved = title_starting(at, "Layer 1 · head 0 (KV head 0) · full resolution, queries 473–600, keys 473–600")
    assert shape(specs(at)[moved]) == (128, 128) and "html" not in specs(at)[moved]
    at.number_input(key="internals_w_k_end").set_value(40).run()
    at.selectbox(key="internals_w_size").set_value(32).run()
    title_starting(at, "Layer 1 · head 0 (KV head 0) · full resolution, queries 569–600, keys 9–40")


def test_a_saved_capture_opens_without_any_model(no_model, tiny_llama, tiny_capture, tmp_path):
    from pages._common import registry

    data = Readout(tiny_capture, tiny_llama).capture_file(include_lens=True)
    path = tmp_path / "saved.safetensors"
    path.write_bytes(data)
    back, results = open_with_results(str(path))
    at = page_with(back, origin="file saved.safetensors", prompt=None, results=results)
    assert registry().current is None
    assert shape(specs(at)["Layer 1 · head 0 (KV head 0)"]) == (T, T)
    at.segmented_control(key="internals_view").set_value("lens").run()
    assert not at.exception
    assert title_starting(at, "Final prediction at position 23")
    assert "prompt" not in at.query_params                       # a file is not reproducible from a link


def test_the_caption_and_the_link_name_the_model_and_its_precision(no_model):
    cap = capture(tiny_model("llama"), None, list(range(5, 15)), CaptureOptions(model_name="tiny-llama",
                                                                               precision="bf16"))
    at = page_with(cap)
    assert any(c.value.startswith("tiny\\-llama (bf16) · 10 tokens") for c in at.caption), [c.value for c in at.caption]
    assert at.query_params["model"] == "tiny-llama" and at.query_params["precision"] == "bf16"


@pytest.fixture
def tiny_resident(registry_with, embedded_tokenizer, monkeypatch):
    """A tiny model resident as if loaded in nf4 (for paths that do not capture), lent to the app's
    registry through its public methods and taken back after."""
    from explorer.model.loading import LoadConfig, LoadedModel

    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    loaded = LoadedModel(model=tiny_model("llama"), tokenizer=embedded_tokenizer,
                         config=LoadConfig(source="tiny", precision="nf4"), name="tiny-llama", source_kind="folder",
                         precision="nf4", load_seconds=0.0, footprint_bytes=0, device_map={})
    registry_with(loaded)
    return loaded


def test_a_link_made_in_another_precision_says_so_and_offers_to_load_that_one(tiny_resident, monkeypatch):
    import pages._internals.link as link

    asked = []
    monkeypatch.setattr(link, "load_into_registry", lambda cfg: asked.append(cfg))   # UI wiring only: no load
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update({"model": "tiny-llama", "precision": "bf16", "prompt": "hello", "layer": "1"})
    at.run()
    assert not at.exception
    assert any("in **bf16**" in w.value and "in **nf4** now" in w.value for w in at.warning)
    assert "internals_on_screen" not in at.session_state                     # nothing captured in the wrong precision
    at.button(key="internals_load_link_precision").click().run()
    assert [(c.source, c.precision) for c in asked] == [("tiny", "bf16")]


# ---- with the embedded model ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_shared_link_captures_its_prompt_and_opens_at_its_layer_head_and_token(embedded_resident):
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"model": embedded_resident.name, "prompt": "The capital of France is", "layer": "7",
                            "head": "4", "token": "-2", "view": "attention"})
    at.run()
    assert not at.exception and not at.error
    assert at.text_area(key="internals_prompt").value == "The capital of France is"
    cap = at.session_state["internals_on_screen"].readout.capture
    t = cap.num_tokens
    assert cap.model_name == embedded_resident.name and cap.num_layers == 30 and cap.precision == embedded_resident.precision
    assert at.query_params["precision"] == embedded_resident.precision
    assert "Layer 7 · head 4 (KV head 1)" in specs(at)
    assert shape(specs(at)["Layer 7 · head 4 (KV head 1)"]) == (t, t)
    assert title_starting(at, f"Attention from token {t - 2}")


@pytest.mark.slow
def test_a_capture_over_the_memory_budget_keeps_fewer_layers_and_says_so(embedded_resident):
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    at.number_input(key="internals_budget_mib").set_value(1)
    at.text_area(key="internals_prompt").set_value("Attention is all you need, they said, and then they measured it.")
    at.button(key="FormSubmitter:internals_capture_form-Capture this prompt").click().run()
    assert not at.exception
    assert any("memory budget" in w.value for w in at.warning)
    layers = at.select_slider(key="internals_layer").options
    assert 1 < len(layers) < 30 and layers[-1] == "29"
    at.segmented_control(key="internals_view").set_value("residual").run()
    assert shape(specs(at)[title_starting(at, "Residual norm")])[0] >= len(layers) + 1   # the residual has first call on the host budget
