"""capture_batch(): several prompts in one right-padded forward, each row's Capture equal to the
capture of its prompt alone, on every tiny family (fp32) and the embedded model in NF4; a bad
prompt fails only itself; the hooks are gone afterwards."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.attention import attention_map
from explorer.record.capture import Capture, CaptureOptions, capture
from explorer.record.capture_batch import capture_batch, chunks
from explorer.record.capture_data import PARTS, PromptTooLongError
from explorer.record.capture_plan import plan_capture
from tests.capture_snapshot import tensors_of
from tests.tiny_models import FAMILIES, tiny_model


def differences(alone: Capture, batched: Capture) -> dict[str, float]:
    """Largest absolute difference per tensor path, and per layer's attention map of head 0 (a
    short row of a batch may keep the batch's causal/sliding mask where alone it needed none:
    the same rule, so compared by what it gives)."""
    a, b = tensors_of(alone), tensors_of(batched)
    for caps in (a, b):
        for path in [p for p in caps if p.startswith(".attention.masks")]:
            del caps[path]
    if alone.attention is not None:
        for layer in alone.attention.layers:
            a[f"map {layer}"] = attention_map(alone, layer, 0)
            b[f"map {layer}"] = attention_map(batched, layer, 0)
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    out = {}
    for path, x in a.items():
        y = b[path]
        if x.shape != y.shape:
            out[path] = float("inf")
        elif x.numel():
            out[path] = float((x.double() - y.double()).abs().max()) if x.is_floating_point() else float((x != y).sum())
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_each_row_of_a_batched_capture_equals_its_prompt_captured_alone(family):
    model = tiny_model(family)
    prompts = [torch.randint(3, 256, (n,)) for n in (9, 14, 4, 14)]      # unequal: three rows are padded
    options = CaptureOptions(parts=PARTS)
    batched = capture_batch(model, None, prompts, options)
    assert len(batched) == len(prompts)
    for prompt, cap in zip(prompts, batched):
        assert isinstance(cap, Capture), cap
        alone = capture(model, None, prompt, options)
        assert cap.num_tokens == prompt.numel() and torch.equal(cap.token_ids, prompt)
        assert cap.components is not None and cap.attention is not None and cap.residual is not None
        diffs = differences(alone, cap)
        assert len(diffs) > 20                                           # it compared the whole capture
        worst = max(diffs, key=diffs.get)
        assert diffs[worst] < 1e-4, (worst, diffs[worst])
        assert cap.notes == alone.notes
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_one_forward_runs_for_the_whole_batch(monkeypatch):
    model = tiny_model("llama")
    calls: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)
    capture_batch(model, None, [torch.randint(3, 256, (n,)) for n in (5, 8, 3)])
    assert calls == [(3, 8)]


def test_a_prompt_that_fails_fails_alone_and_the_others_are_captured():
    model = tiny_model("llama")           # max_position_embeddings 256
    prompts = [torch.randint(3, 256, (6,)), torch.randint(3, 256, (300,)), torch.randint(3, 256, (6,))]
    out = capture_batch(model, None, prompts)
    assert isinstance(out[1], PromptTooLongError)
    assert isinstance(out[0], Capture) and isinstance(out[2], Capture)
    assert max(differences(capture(model, None, prompts[2]), out[2]).values()) < 1e-4


def test_batches_are_cut_where_the_padded_tokens_would_pass_the_limit():
    model = tiny_model("llama")
    plans = [plan_capture(model, None, torch.randint(3, 256, (n,)), CaptureOptions()) for n in (10, 10, 30, 5, 5)]
    assert chunks(plans, 60) == [[2, 0], [1, 3, 4]]          # longest first: 2×30, then 3×10
    assert chunks(plans, 1000) == [[2, 0, 1, 3, 4]]
    assert chunks(plans, 1) == [[2], [0], [1], [3], [4]]


def test_the_embedded_model_in_nf4_captures_a_class_s_turns_as_it_captures_each_alone(embedded_nf4):
    m = embedded_nf4
    turns = [[{"role": "user", "content": text}] for text in
             ("What is a transformer?", "Name three colours.", "Why is the sky blue? Answer in one line.")]
    batched = capture_batch(m.model, m.tokenizer, turns, CaptureOptions())
    for turn, cap in zip(turns, batched):
        alone = capture(m.model, m.tokenizer, turn, CaptureOptions())
        assert torch.equal(cap.token_ids, alone.token_ids)
        assert cap.tokens == alone.tokens
        assert int(cap.last_logits.argmax()) == int(alone.last_logits.argmax())
        diffs = differences(alone, cap)
        scale = float(alone.residual.float().abs().max())
        assert diffs[".residual"] <= 0.02 * scale, (diffs[".residual"], scale)
        # bf16 compute: a batched product rounds differently, so the bound is relative (alone vs
        # alone again is exact; batched rows differ by ~1-2% of the largest value here)
        assert diffs[".last_logits"] <= 0.05 * float(alone.last_logits.abs().max())
