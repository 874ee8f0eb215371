"""AppTest for pages/architecture.py: opens offline on the embedded config, switches sources, refuses bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.model.load_config import bnb_config
from explorer.model.loading import LoadConfig, LoadedModel
from tests.tiny_models import tiny_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "architecture.py")


def run_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=120).run()


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


@pytest.fixture(autouse=True)
def _no_resident_model(empty_registry):
    yield empty_registry


def test_page_opens_offline_on_the_embedded_config_without_weights():
    at = run_page()
    assert not at.exception
    assert at.selectbox(key="arch_source").value == "embedded"
    assert metrics(at)["Parameters"] == "135 M" and metrics(at)["Decoder layers"] == "30"
    assert any("meta device, no weights" in c.value for c in at.caption)
    traces = [t["type"] for spec in plotly_specs(at) for t in spec["data"]]
    assert "icicle" in traces and "scatter" in traces and "bar" in traces


def test_presets_show_their_known_totals():
    at = run_page()
    for key, total in [("llama-3.1-8b-instruct", "8.03 B"), ("phi-3-mini-4k-instruct", "3.82 B"),
                       ("gemma-2-2b-it", "2.61 B")]:
        at.selectbox(key="arch_source").set_value(key).run()
        assert not at.exception and not at.error
        assert metrics(at)["Parameters"] == total


def test_module_filter_narrows_the_table():
    at = run_page()
    at.text_input(key="arch_filter").set_value("q_proj").run()
    assert any(c.value.startswith("30 of 397 modules") for c in at.caption)
    assert at.get("download_button"), "the table is downloadable as CSV"


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"model_type": "vit"}', "not a causal language model"),
    ('{"model_type": "no-such-model"}', "unknown to this transformers"),
])
def test_bad_config_files_get_a_clear_message(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    at = run_page()
    at.selectbox(key="arch_source").set_value("path").run()
    at.text_input(key="arch_path").set_value(str(path)).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert not at.metric, "nothing is drawn for a config that cannot be built"


def test_a_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = run_page()
    at.selectbox(key="arch_source").set_value("hub").run()
    at.text_input(key="arch_hub").set_value("someone/uncached-model").run()
    assert any("offline" in e.value for e in at.error)


def test_the_loaded_model_is_shown_with_unpacked_4bit_counts(tmp_path, empty_registry, embedded_tokenizer):
    from transformers import AutoModelForCausalLM

    reference = tiny_model("llama")
    reference.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=bnb_config("nf4", True, "bf16"),
                                                 dtype=torch.bfloat16)
    empty_registry.adopt(LoadedModel(
        model=model, tokenizer=embedded_tokenizer, config=LoadConfig(source=str(tmp_path), precision="nf4"), name="tiny-llama",
        source_kind="folder", precision="nf4", load_seconds=0.0,
        footprint_bytes=model.get_memory_footprint(), device_map={"": "cpu"}))
    at = run_page()
    assert not at.exception
    assert at.selectbox(key="arch_source").value == "loaded"
    expected = sum(p.numel() for p in reference.parameters())
    assert metrics(at)["Parameters"] == f"{expected / 1e3:.0f} K"
    assert any("Measured on this load" in c.value and "(+0.00%)" in c.value for c in at.caption)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))      # on CPU, bitsandbytes repacks 4-bit weights at the first forward
    at.run()
    from explorer.model.footprint import resident_bytes
    from explorer.views.units import fmt_bytes
    assert metrics(at)["Memory (nf4)"] == fmt_bytes(resident_bytes(model))   # now, as the chat page shows it
    at.selectbox(key="arch_module").set_value("model.layers.0.mlp.up_proj").run()
    assert any("nf4 · block 64 · double quant" in str(df.value) for df in at.dataframe)
    empty_registry.unload()  # unloaded from another page: fall back to the embedded config
    at.run()
    assert not at.exception and at.selectbox(key="arch_source").value == "embedded"
