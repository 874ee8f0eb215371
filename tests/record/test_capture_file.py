"""A capture saved to one file opens without the model and answers the same questions."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from explorer.analyse.attention import attention_map, capture_head_summaries
from explorer.analyse.capture_bundle import describe_capture, open_with_results, save_with_results
from explorer.analyse.derived import Derived
from explorer.analyse.lens import LensHead, logit_lens
from explorer.record.capture import CaptureOptions, capture
from explorer.record.capture_file import open_capture, save_capture
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def gemma_capture():
    model = tiny_model("gemma2")
    cap = capture(model, None, torch.randint(3, 256, (21,)))   # > sliding window: masks are stored
    results = Derived()
    capture_head_summaries(cap, results)
    logit_lens(cap, LensHead.from_model(model), k=2, decode=lambda i: f"t{i}", derived=results)
    return cap, results


def test_round_trip(tmp_path, gemma_capture):
    cap, results = gemma_capture
    path = tmp_path / "x.capture"
    save_with_results(cap, str(path), results)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["explorer_capture"])
    assert meta["format"] == "llm-explorer-capture"
    back, back_results = open_with_results(str(path))
    for name in ("token_ids", "embeddings", "residual", "attn_out_norm", "mlp_out_norm", "last_logits"):
        assert torch.equal(getattr(back, name), getattr(cap, name)), name
    assert back.tokens == cap.tokens and back.residual_layers == cap.residual_layers
    assert list(back.norms) == list(cap.norms)
    for name, stats in cap.norms.items():
        assert torch.equal(back.norms[name].output_std, stats.output_std)
        assert torch.equal(back.norms[name].weight, stats.weight)
    assert back.anatomy == cap.anatomy and back.kv_head_of == cap.kv_head_of
    assert len(back.attention.masks) == len(cap.attention.masks) >= 1
    for m_back, m in zip(back.attention.masks, cap.attention.masks):
        assert torch.equal(m_back, m)
    for layer in cap.attention_layers:
        assert torch.equal(attention_map(back, layer, 3), attention_map(cap, layer, 3))
    assert torch.equal(capture_head_summaries(back, back_results).entropy, results.summaries.entropy)
    assert torch.equal(logit_lens(back, None, k=2, derived=back_results).token_ids, results.lens[2].token_ids)
    some_id = int(results.lens[2].token_ids[0, 0, 0])
    assert back.token_text(some_id) == f"t{some_id}"            # texts the lens decoded travel with the file
    with pytest.raises(LookupError, match="needs the model"):
        logit_lens(back, None, k=7, derived=back_results)
    with pytest.raises(LookupError, match="needs the model"):
        logit_lens(back, None, k=2)                              # the capture itself holds no lens
    assert "next token" in describe_capture(back, back_results)
    assert "head summaries" in describe_capture(back, back_results) and "head summaries" not in describe_capture(back)


def test_saving_without_results_keeps_only_the_capture(tmp_path, gemma_capture):
    cap, _ = gemma_capture
    save_capture(cap, tmp_path / "plain.capture")
    back, back_results = open_with_results(tmp_path / "plain.capture")
    assert back_results.summaries is None and back_results.lens == {}
    assert torch.equal(back.residual, cap.residual)


def test_without_attention_is_smaller(tmp_path, gemma_capture):
    full, slim = tmp_path / "full.capture", tmp_path / "slim.capture"
    cap, results = gemma_capture
    save_with_results(cap, str(full), results)
    save_with_results(cap, str(slim), results, include_attention=False)
    assert slim.stat().st_size < full.stat().st_size
    back, back_results = open_with_results(slim)
    assert back.attention is None and torch.equal(capture_head_summaries(back, back_results).lookback,
                                                  results.summaries.lookback)


def test_rejects_other_files(tmp_path):
    from safetensors.torch import save_file
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not an LLM Explorer capture"):
        open_capture(other)


def test_the_precision_travels_with_the_file_and_an_old_file_reads_as_unknown(tmp_path):
    cap = capture(tiny_model("llama"), None, list(range(3, 12)), CaptureOptions(model_name="tiny", precision="int8"))
    assert cap.precision == "int8"
    save_capture(cap, tmp_path / "a.safetensors")
    back = open_capture(tmp_path / "a.safetensors")
    assert back.precision == "int8" and "model: tiny (int8)" in describe_capture(back)
    cap.precision = None                                        # what a file from before the field holds
    save_capture(cap, tmp_path / "b.safetensors")
    assert open_capture(tmp_path / "b.safetensors").precision is None


def test_a_file_saved_by_the_version_that_kept_results_in_the_capture_opens_with_them():
    """tests/record/files/v1_tiny_llama_with_results.capture was written by the writer that kept head
    summaries and the lens inside the Capture (commit 470c1eb): tiny llama, 12 tokens, lens k=5 with
    token texts "t<id>". It opens with its results beside the capture."""
    from pathlib import Path

    from explorer.views.readout import Readout

    cap, results = open_with_results(Path(__file__).parent / "files" / "v1_tiny_llama_with_results.capture")
    assert cap.num_tokens == 12 and results.summaries.entropy.shape == (3, 4, 12) and sorted(results.lens) == [5]
    first = int(results.lens[5].token_ids[0, 0, 0])
    assert cap.token_text(first) == f"t{first}"
    r = Readout(cap, results=results)
    assert r.lens_available and r.lens_window(0, 4, 3).texts[0][0][0] == f"t{first}"
    assert "head summaries" in describe_capture(cap, results)
