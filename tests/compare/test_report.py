"""Results files and reports. The comparison is built from drift measured on tiny models, so the
numbers in the files are real; no model is loaded from disk."""
from __future__ import annotations

import json
import math

import pytest
import torch

from explorer.analyse.drift import compare_fingerprints, fingerprint
from explorer.compare.report import (
    drift_rows,
    html_report,
    markdown_report,
    open_results,
    output_rows,
    results_from_json,
    results_to_json,
    save_results,
    speed_rows,
    to_dict,
)
from explorer.compare.run import CompareConfig, ComparisonResult, PromptOutput, RunRecord
from tests.tiny_models import tiny_model

IDS = torch.tensor([1, 5, 9, 33, 70, 2, 18])


@pytest.fixture(scope="module")
def result() -> ComparisonResult:
    model = tiny_model("llama")
    ref = [fingerprint(model, None, IDS, "Why is the sky blue?")]
    bf16 = [fingerprint(tiny_model("llama").to(torch.bfloat16), None, IDS, "Why is the sky blue?")]
    drift = compare_fingerprints(ref, bf16, "fp32", "bf16")
    out = [PromptOutput("Why is the sky blue?", "Rayleigh | scattering.\nYes", 12, 6, 0.5, 0.1, 50.0)]
    runs = [
        RunRecord("embedded", "fp32", "SmolLM2", "fp32", 1.5, 540_000_000, 600_000_000, "rss_sampled", 0.1, 50.0,
                  out, is_reference=True),
        RunRecord("embedded", "bf16", "SmolLM2", "bf16", 1.2, 270_000_000, 300_000_000, "rss_sampled", 0.2,
                  float("nan"), [PromptOutput("Why is the sky blue?", error="Out of memory during generation.")],
                  drift=drift, error="Out of memory during generation."),
        RunRecord("/no/such", "nf4", error="No such file or folder: /no/such"),
    ]
    return ComparisonResult(CompareConfig(["embedded", "/no/such"], ["nf4", "bf16", "fp32"], ["Why is the sky blue?"]),
                            runs, {"cpu": "Test CPU", "torch": torch.__version__}, "2025-01-01 10:00:00", 12.0)


def test_results_reopen_equal_to_what_was_saved(result, tmp_path):
    path = save_results(result, tmp_path / "sub" / "results.json")
    reopened = open_results(path)
    assert to_dict(reopened) == json.loads(results_to_json(result))    # every field comes back
    d0, d1 = result.runs[1].drift, reopened.runs[1].drift
    assert d1.kl_mean == d0.kl_mean and d1.attention_diff == d0.attention_diff
    assert d1.prompts[0].kl == d0.prompts[0].kl and d1.largest_jump_layer == d0.largest_jump_layer
    assert reopened.runs[0].outputs[0].text == "Rayleigh | scattering.\nYes"
    assert math.isnan(result.runs[1].tokens_per_second) and reopened.runs[1].tokens_per_second is None


def test_the_file_is_strict_json_without_nan(result):
    text = results_to_json(result)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("text,words", [("{not json", "not valid JSON"), ('{"a": 1}', "not a comparison"),
                                        ('{"format": "llm-explorer-compare", "version": 99}', "version 99"),
                                        ('{"format": "llm-explorer-compare", "version": 1}', "damaged")])
def test_wrong_files_are_refused_with_a_sentence(text, words):
    with pytest.raises(ValueError, match=words):
        results_from_json(text)


def test_tables_have_one_row_per_run_and_mark_the_reference(result):
    speed, drift = speed_rows(result), drift_rows(result)
    assert len(speed) == len(drift) == 3
    assert speed[0]["footprint GiB"] == pytest.approx(0.54e9 / 2**30)
    assert drift[0]["reference"] == "(reference)" and drift[0]["KL mean (nats)"] == 0.0
    assert drift[1]["reference"] == "fp32" and drift[1]["KL mean (nats)"] > 0
    assert "No such file" in speed[2]["error"] and drift[2]["KL mean (nats)"] is None
    assert output_rows(result)[1]["output"].startswith("⚠ Out of memory")


def test_markdown_report_has_tables_per_layer_drift_and_outputs(result):
    md = markdown_report(result, extra="## Notebook claims\n\n| a | b |")
    assert "| SmolLM2 | fp32 | fp32 | 1.50 | 0.503 |" in md   # 0.54e9 bytes in GiB
    assert "### Per layer: SmolLM2 · bf16 against fp32" in md and "| 2 |" in md
    assert "*SmolLM2 · fp32*: Rayleigh | scattering. Yes" in md
    assert "## Runs that did not load" in md and "/no/such · nf4: No such file" in md
    assert md.rstrip().endswith("| a | b |")


def test_html_report_is_one_page_with_tables_and_charts(result):
    page = html_report(result, plotlyjs="cdn")
    assert page.startswith("<!doctype html>") and page.count("<table>") >= 3
    assert page.count("plotly-graph-div") >= 4 and 'src="https://cdn.plot.ly' in page
    assert "Rayleigh | scattering" in page and "&lt;" not in page.split("<body>")[0]
    offline = html_report(result)
    assert len(offline) > len(page) + 1_000_000 and 'src="https://cdn.plot.ly' not in offline
