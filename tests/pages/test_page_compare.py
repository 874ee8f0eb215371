"""AppTest for pages/compare.py: runs a comparison on a tiny model folder, hands the chat model back,
opens saved results, and turns bad input into messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.analyse.drift import compare_fingerprints, fingerprint
from explorer.compare.report import results_to_json
from explorer.compare.run import CompareConfig, ComparisonResult, PromptOutput, RunRecord
from explorer.model.loading import LoadConfig
from tests.tiny_models import tiny_model

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "compare.py")


@pytest.fixture(autouse=True)
def _no_resident_model(empty_registry):
    yield empty_registry


def table_with(at: AppTest, column: str):
    """The table that has this column (dataframes without selection carry no key in AppTest)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def open_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=300).run()


def finish(at: AppTest, timeout: float = 300) -> AppTest:
    """Run the page until this session's comparison thread has ended and its result is shown."""
    if "compare_job" in at.session_state:
        assert at.session_state["compare_job"].done.wait(timeout), "the comparison did not end"
        at.run()
    assert "compare_job" not in at.session_state
    return at


def configure(at: AppTest, folder: str, precisions: list[str], tokens: int = 3, drift: bool = True) -> None:
    at.multiselect(key="cmp_models").set_value([])
    at.text_input(key="cmp_extra").set_value(folder)
    at.multiselect(key="cmp_precisions").set_value(precisions)
    at.text_area(key="cmp_prompts").set_value("Hello there")
    at.number_input(key="cmp_max_new").set_value(tokens)
    at.checkbox(key="cmp_drift").set_value(drift)


def test_page_opens_with_defaults_and_without_a_model():
    at = open_page()
    assert not at.exception
    assert at.multiselect(key="cmp_models").value == ["embedded"]
    assert at.multiselect(key="cmp_precisions").value == ["nf4", "bf16"]
    assert any("open saved results" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 0


def test_comparison_runs_shows_tables_charts_downloads_and_reloads_the_chat_model(tiny_folder, empty_registry):
    resident = empty_registry.load(LoadConfig(source=tiny_folder, precision="bf16"))
    at = open_page()
    configure(at, tiny_folder, ["fp32", "bf16"])
    finish(at.button(key="cmp_run").click().run())
    assert not at.exception and not at.error
    result = at.session_state["compare_result"]
    assert [r.precision for r in result.runs] == ["fp32", "bf16"] and result.runs[1].drift.kl_mean > 0
    speed = table_with(at, "tokens/s")
    assert list(speed["precision"]) == ["fp32", "bf16"] and (speed["tokens/s"] > 0).all()
    drift = table_with(at, "KL mean (nats)")
    assert list(drift["reference"]) == ["(reference)", "fp32"]
    assert len(at.get("plotly_chart")) == 5          # speed, drift, per layer, per position, per head
    assert [t.value for t in at.text] == [r.outputs[0].text.strip() or "(empty)" for r in result.runs]
    assert {b.label for b in at.get("download_button")} >= {"Download results (.json)", "Download report (.md)",
                                                            "Download report (.html)"}
    now = empty_registry.current
    assert now is not None and now is not resident and now.precision == "bf16"   # unloaded, then loaded again
    at.selectbox(key="cmp_head_run").set_value(0).run()                          # views switch without re-running
    assert not at.exception and at.session_state["compare_result"] is result


def test_without_reload_the_chat_model_stays_unloaded(tiny_folder, empty_registry):
    empty_registry.load(LoadConfig(source=tiny_folder, precision="fp32"))
    at = open_page()
    configure(at, tiny_folder, ["fp32"], tokens=1, drift=False)
    at.checkbox(key="cmp_reload").set_value(False)
    finish(at.button(key="cmp_run").click().run())
    assert not at.exception
    assert empty_registry.current is None
    assert at.session_state["compare_result"].runs[0].loaded_precision == "fp32"


def test_bad_input_is_a_message_and_a_missing_model_is_a_row():
    at = open_page()
    at.multiselect(key="cmp_precisions").set_value([])
    at.button(key="cmp_run").click().run()
    assert not at.exception and any("precision" in e.value for e in at.error)
    assert "compare_result" not in at.session_state
    at.multiselect(key="cmp_precisions").set_value(["bf16"])
    at.multiselect(key="cmp_models").set_value([])
    at.text_input(key="cmp_extra").set_value("/no/such/model")
    finish(at.button(key="cmp_run").click().run())
    assert not at.exception
    assert any("No such file or folder" in e.value for e in at.error)


def saved_results() -> bytes:
    """A results file as a comparison writes it, with drift measured on two tiny models."""
    ids = torch.tensor([1, 5, 9, 33, 70, 2])
    ref = [fingerprint(tiny_model("llama"), None, ids, "Hi")]
    drift = compare_fingerprints(ref, [fingerprint(tiny_model("llama").to(torch.bfloat16), None, ids, "Hi")],
                                 "fp32", "bf16")
    runs = [RunRecord("m", "fp32", "tiny", "fp32", 1.0, 4_000_000, 8_000_000, "rss_sampled", 0.1, 30.0,
                      [PromptOutput("Hi", "Hello!", 6, 3, 0.2, 0.1, 30.0)], is_reference=True),
            RunRecord("m", "bf16", "tiny", "bf16", 1.0, 2_000_000, 5_000_000, "rss_sampled", 0.1, 25.0,
                      [PromptOutput("Hi", "Hey!", 6, 3, 0.2, 0.1, 25.0)], drift=drift)]
    result = ComparisonResult(CompareConfig(["m"], ["fp32", "bf16"], ["Hi"]), runs, {"cpu": "x"}, "2025-02-03 04:05:06")
    return results_to_json(result).encode()


def test_saved_results_open_in_the_page():
    at = open_page()
    at.file_uploader(key="cmp_upload").upload("bad.json", b'{"a": 1}', "application/json").run()
    assert any("not a comparison results file" in e.value for e in at.error)
    saved = saved_results()
    at.file_uploader(key="cmp_upload").upload("r.json", saved, "application/json").run()
    assert not at.exception
    result = at.session_state["compare_result"]
    assert result.started == json.loads(saved)["started"]
    assert len(table_with(at, "KL mean (nats)")) == len(result.runs)
    assert len(at.get("plotly_chart")) >= 4
    assert [t.value for t in at.text] == ["Hello!", "Hey!"]                       # outputs side by side
