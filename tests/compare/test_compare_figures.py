"""Figure builders of the comparison: right traces, right axes, binary-friendly arrays."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from explorer.analyse.drift import compare_fingerprints, fingerprint
from explorer.compare.figures import (
    attention_diff_figure,
    drift_summary_figure,
    position_kl_figure,
    residual_drift_figure,
    run_labels,
    speed_memory_figure,
)
from explorer.compare.run import CompareConfig, ComparisonResult, RunRecord
from tests.tiny_models import tiny_model

IDS = torch.tensor([1, 5, 9, 33, 70, 2])


@pytest.fixture(scope="module")
def result() -> ComparisonResult:
    ref = [fingerprint(tiny_model("llama"), None, IDS, "p")]
    runs = [RunRecord("m", "fp32", "m", "fp32", 1.0, 4_000_000, 9_000_000, "rss_sampled", 0.1, 30.0, is_reference=True)]
    for precision, seed in (("bf16", 0), ("nf4", 3)):
        model = tiny_model("llama", seed=seed).to(torch.bfloat16)
        drift = compare_fingerprints(ref, [fingerprint(model, None, IDS, "p")], "fp32", precision)
        runs.append(RunRecord("m", precision, "m", precision, 1.0, 2_000_000, 5_000_000, "rss_sampled", 0.2, 20.0,
                              drift=drift))
    runs.append(RunRecord("bad", "nf4", error="did not load"))
    return ComparisonResult(CompareConfig(["m", "bad"], ["fp32", "bf16", "nf4"], ["p"]), runs)


def test_speed_memory_figure_has_one_bar_per_loaded_run_in_each_panel(result):
    fig = speed_memory_figure(result)
    assert isinstance(fig, go.Figure) and len(fig.data) == 4
    assert all(list(t.x) == ["fp32", "bf16", "nf4"] for t in fig.data)     # one model: precisions suffice
    np.testing.assert_allclose(np.asarray(fig.data[0].y), np.array([4e6, 2e6, 2e6]) / 2**30, rtol=1e-5)   # GiB
    assert np.asarray(fig.data[3].y).dtype == np.float32


def test_drift_summary_figure_plots_kl_on_a_log_axis_and_agreement_as_percent(result):
    fig = drift_summary_figure(result)
    assert len(fig.data) == 2 and len(fig.data[0].x) == 2
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.tickformat == ".0%"
    kl = np.asarray(fig.data[0].y)
    assert kl[1] > kl[0] > 0            # a different model drifts more than the same one in bf16


def test_residual_drift_figure_has_one_line_per_run_and_panel(result):
    fig = residual_drift_figure(result)
    assert len(fig.data) == 4 and list(fig.data[0].x) == [0, 1, 2]
    assert fig.layout.yaxis2.type == "log"
    assert all(0 < y <= 1.0 + 1e-6 for y in fig.data[0].y)


def test_attention_diff_figure_is_a_layers_by_heads_heatmap(result):
    drift = result.runs[2].drift
    fig = attention_diff_figure(drift, "m · nf4")
    z = np.asarray(fig.data[0].z)
    assert fig.data[0].type == "heatmap" and z.shape == (3, 4) and z.dtype == np.float32
    assert "m · nf4 vs fp32" in fig.layout.title.text


def test_position_kl_figure_labels_positions_with_tokens(result):
    fig = position_kl_figure(result, 0)
    assert len(fig.data) == 2 and len(fig.data[0].y) == len(IDS)
    assert list(fig.layout.xaxis.ticktext) == [str(i) for i in IDS.tolist()]
    assert len(position_kl_figure(result, 5).data) == 0      # no such prompt: an empty figure, not an error


def test_labels_name_the_model_only_when_several_are_compared():
    runs = [RunRecord("/models/Qwen2.5-0.5B-Instruct-with-a-very-long-name", "nf4"),
            RunRecord("embedded", "bf16", model_name="SmolLM2")]
    assert run_labels(runs) == ["Qwen2.5-0.5B-Instruct-w… · nf4", "SmolLM2 · bf16"]
    assert run_labels(runs[1:]) == ["bf16"]


def test_two_models_in_one_precision_get_the_same_colour_and_different_dashes(result):
    drift = result.runs[2].drift
    two = ComparisonResult(result.config, [RunRecord("a", "nf4", "a", "nf4", drift=drift),
                                           RunRecord("b", "nf4", "b", "nf4", drift=drift)])
    lines = residual_drift_figure(two).data[::2]
    assert [t.name for t in lines] == ["a · nf4 vs fp32", "b · nf4 vs fp32"]
    assert lines[0].line.color == lines[1].line.color and lines[0].line.dash != lines[1].line.dash
