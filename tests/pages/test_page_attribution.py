"""The Attribution view on the Internals page (AppTest): graph and heatmap drawn from the capture,
a picked attention edge opens its heads' maps, a capture without components says what to do."""
from __future__ import annotations

import pytest
import torch

from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
from tests.pages.internals_page import page_with, title_starting
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def comp_capture():
    ids = torch.randint(5, 250, (20,), generator=torch.Generator().manual_seed(4)).tolist()
    model = tiny_model("llama")
    with torch.no_grad():                      # random init writes little through attention: make it matter
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(40)
    return capture(model, None, ids, CaptureOptions(parts=DEFAULT_PARTS | {"components"}))


def test_attribution_view_draws_routes_and_heatmap(no_model, comp_capture):
    at = page_with(comp_capture)
    at.segmented_control(key="internals_view").set_value("attribution").run()
    assert not at.exception
    title_starting(at, "Information-flow routes into position 19")
    title_starting(at, "Direct contribution to the logit")
    assert any("Attribution" in c.value for c in at.caption)


def test_a_picked_attention_edge_shows_its_heads_maps(no_model, comp_capture):
    at = page_with(comp_capture)
    at.segmented_control(key="internals_view").set_value("attribution").run()
    from explorer.analyse.routes import attention_rows_from_store, build_routes
    graph = build_routes(comp_capture.components, attention_rows_from_store(comp_capture.attention), 19, 0.04)
    index = next(i for i, e in enumerate(graph.edges) if e.kind == "attention")
    edge = graph.edges[index]
    at.session_state["internals_routes_pick"] = (0, index, 19, 0.04)
    at.run()
    assert not at.exception
    assert any("Heads that carry it" in m.value for m in at.markdown)
    title_starting(at, f"Layer {edge.layer} · head {edge.heads[0][0]}")


def test_a_capture_without_components_explains_what_to_do(no_model):
    cap = capture(tiny_model("llama"), None, list(range(5, 20)))
    at = page_with(cap)
    at.segmented_control(key="internals_view").set_value("attribution").run()
    assert not at.exception
    assert any("no per-head components" in i.value for i in at.info)


def test_the_components_toggle_decides_what_a_capture_records(no_model):
    """Components are on by default (kept on a GPU while they fit, they cost little there too);
    the capture options follow the sidebar toggle."""
    at = page_with(capture(tiny_model("llama"), None, list(range(5, 20))))
    toggle = at.toggle(key="internals_record_components")
    assert toggle.value is True
    from pages._internals import on_screen
    for on in (True, False):
        toggle.set_value(on).run()
        assert not at.exception
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(on_screen.st, "session_state", {"internals_record_components": on})
            assert ("components" in on_screen.capture_options("m").parts) is on
