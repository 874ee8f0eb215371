"""Comparison runs on a tiny random model saved as a folder: every precision loads through the real
loader, generates, and is compared against the highest precision that loaded."""
from __future__ import annotations

import json

import pytest
import torch

from explorer.analyse.drift import compare_fingerprints
from explorer.cli.main import main as cli_main
from explorer.compare.measure import PeakMemory
from explorer.compare.report import open_results
from explorer.compare.run import CompareConfig, run_comparison, take_fingerprints
from explorer.model.loading import LoadConfig, load_model, unload

PROMPTS = ["What is the capital of France?", "Count to three."]


@pytest.fixture(scope="module")
def result(tiny_folder):
    config = CompareConfig(models=[tiny_folder, "/no/such/model"], precisions=["nf4", "bf16", "fp32"],
                           prompts=PROMPTS, max_new_tokens=4, fixed_length=True, warmup=False)
    seen: list[str] = []
    out = run_comparison(config, progress=seen.append)
    out.progress_lines = seen  # type: ignore[attr-defined]
    return out


def test_runs_go_highest_precision_first_and_the_first_that_loads_is_the_reference(result, tiny_folder):
    runs = [r for r in result.runs if r.model == tiny_folder]
    assert [r.precision for r in runs] == ["fp32", "bf16", "nf4"]
    assert runs[0].is_reference and runs[0].drift is None
    assert all(r.drift is not None and r.drift.reference == "fp32" for r in runs[1:])
    assert [r.loaded_precision for r in runs] == ["fp32", "bf16", "nf4"]


def test_each_run_records_load_memory_speed_and_output(result, tiny_folder):
    for r in (r for r in result.runs if r.model == tiny_folder):
        assert r.error is None, r.error
        assert r.load_seconds > 0 and r.footprint_bytes > 0
        # RSS above the run's start: a tiny model can fit in memory the allocator already holds, so 0 is possible
        assert r.peak_method == "rss_sampled" and r.peak_bytes >= 0
        assert r.time_to_first_token > 0 and r.tokens_per_second > 0
        assert [o.prompt for o in r.outputs] == PROMPTS
        assert all(o.new_tokens == 4 and isinstance(o.text, str) for o in r.outputs)   # fixed length
    fp32, bf16, nf4 = (next(r for r in result.runs if r.model == tiny_folder and r.precision == p)
                       for p in ("fp32", "bf16", "nf4"))
    assert nf4.footprint_bytes < bf16.footprint_bytes < fp32.footprint_bytes


def test_quantized_runs_drift_and_nf4_drifts_more_than_bf16(result, tiny_folder):
    bf16, nf4 = (next(r for r in result.runs if r.model == tiny_folder and r.precision == p).drift
                 for p in ("bf16", "nf4"))
    assert nf4.kl_mean > 0 and nf4.residual_rel_error[-1] > 0
    assert nf4.kl_mean > bf16.kl_mean > 0
    assert nf4.residual_rel_error[-1] > bf16.residual_rel_error[-1]
    assert len(nf4.attention_diff) == 3 and len(nf4.attention_diff[0]) == 4
    assert [p.prompt for p in nf4.prompts] == PROMPTS
    assert nf4.positions == sum(len(p.kl) for p in nf4.prompts)


def test_a_model_that_fails_to_load_is_a_row_with_a_message(result):
    bad = [r for r in result.runs if r.model == "/no/such/model"]
    assert len(bad) == 3
    assert all("No such file or folder" in r.error and r.loaded_precision is None for r in bad)
    assert any("/no/such/model" in line for line in result.progress_lines)


def test_bf16_loaded_twice_has_zero_drift(tiny_folder):
    a = load_model(LoadConfig(source=tiny_folder, precision="bf16"))
    ref = take_fingerprints(a, PROMPTS[:1], None, attention=True)
    unload(a)
    b = load_model(LoadConfig(source=tiny_folder, precision="bf16"))
    try:
        d = compare_fingerprints(ref, take_fingerprints(b, PROMPTS[:1], None, attention=True), "bf16", "bf16")
    finally:
        unload(b)
    assert d.kl_mean == 0.0 and d.top1_agreement == 1.0 and max(d.residual_rel_error) == 0.0
    assert max(v for row in d.attention_diff for v in row) == 0.0


def test_a_prompt_too_long_for_the_context_is_an_error_in_its_run_not_a_crash(tiny_folder):
    config = CompareConfig(models=[tiny_folder], precisions=["fp32"], prompts=["Hi", "word " * 400],
                           max_new_tokens=3, fixed_length=True, drift=False, warmup=False, repeats=3)
    (run,) = run_comparison(config).runs
    assert run.loaded_precision == "fp32" and run.outputs[0].error is None
    assert "context" in run.outputs[1].error and run.error == run.outputs[1].error
    speeds = run.outputs[0].repeat_tokens_per_second            # three timed repeats, the median kept
    assert len(speeds) == 3 and run.outputs[0].tokens_per_second == sorted(speeds)[1]


def test_a_model_too_big_for_this_machine_is_refused_before_loading(tmp_path):
    """A config-only folder of a ~0.5 T-parameter model: estimated on the meta device, never loaded."""
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=1024, hidden_size=65536, intermediate_size=131072, num_hidden_layers=16,
                num_attention_heads=64, num_key_value_heads=8).save_pretrained(tmp_path)
    config = CompareConfig(models=[str(tmp_path)], precisions=["fp32", "nf4"], prompts=["Hi"], drift=False)
    runs = run_comparison(config).runs
    assert [r.precision for r in runs] == ["fp32", "nf4"]
    assert all(r.error.startswith("Does not fit") and "GiB" in r.error and r.loaded_precision is None for r in runs)


def test_peak_memory_sees_an_allocation_inside_the_block():
    with PeakMemory() as peak:
        block = torch.ones(300 * 2**20 // 4)                     # 300 MiB of float32
        block += 1
    del block
    assert peak.method == "rss_sampled" and peak.peak_bytes > 250 * 2**20


def test_config_refuses_bad_input():
    for bad, words in [(dict(models=[]), "model"), (dict(precisions=["int3"]), "unknown precision"),
                       (dict(prompts=["  "]), "prompt")]:
        kwargs = dict(models=["embedded"], precisions=["nf4"], prompts=["hi"]) | bad
        with pytest.raises(ValueError, match=words):
            CompareConfig(**kwargs).validate()


def _cli(argv: list[str]) -> int:
    return cli_main(argv)


def test_cli_writes_results_that_reopen_and_a_markdown_report(tiny_folder, tmp_path, capsys):
    out, report = tmp_path / "results.json", tmp_path / "report.md"
    code = _cli(["compare", "--models", tiny_folder, "--precisions", "bf16,fp32", "--prompt", "Hello",
                 "--max-new-tokens", "3", "--no-attention", "--out", str(out), "--report", str(report)])
    assert code == 0
    reopened = open_results(out)
    assert [r.precision for r in reopened.runs] == ["fp32", "bf16"]
    assert reopened.runs[1].drift.kl_mean > 0 and reopened.runs[1].drift.attention_diff == []
    assert "| fp32 |" in report.read_text() and "KL" in report.read_text()
    assert "bf16" in capsys.readouterr().out
    assert json.loads(out.read_text())["format"] == "llm-explorer-compare"


def test_cli_refuses_an_unknown_precision_without_loading_anything(tmp_path, capsys):
    code = _cli(["compare", "--precisions", "nf4,int3", "--prompt", "x", "--out", str(tmp_path / "r.json")])
    assert code == 2 and "int3" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
