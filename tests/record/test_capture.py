"""capture() on tiny random models of every family: values match the model's own outputs, hooks
never outlive a capture, threads sharing a model get their own results, budgets degrade."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from explorer.analyse.attention import attention_map
from explorer.model.anatomy import resolve
from explorer.record.attention_store import LayerNotKept
from explorer.record.capture import CaptureOptions, PromptTooLongError, capture
from tests.model.test_anatomy import OddModel
from tests.tiny_models import FAMILIES, tiny_model


@pytest.fixture(scope="module")
def models():
    return {f: tiny_model(f) for f in FAMILIES}


def _hooks(model) -> set[tuple[str, int]]:
    """Every forward hook on the model. transformers installs its own, permanently, the first time
    output_hidden_states is asked for, so tests compare before/after rather than count to zero."""
    return {(name, hid) for name, m in model.named_modules()
            for hid in (*m._forward_hooks, *m._forward_pre_hooks)}


def _reference(model, ids):
    with torch.no_grad():
        return model(input_ids=ids[None], output_hidden_states=True, use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_values_match_model(models, family):
    model = models[family]
    impl = model.config._attn_implementation
    ids = torch.randint(3, 256, (19,))
    before = _hooks(model)
    cap = capture(model, None, ids)
    assert _hooks(model) == before
    ref = _reference(model, ids)
    n, t, d = model.config.num_hidden_layers, 19, model.config.hidden_size
    assert cap.residual.shape == (n, t, d) and cap.residual_layers == list(range(n))
    assert torch.allclose(cap.embeddings, ref.hidden_states[0][0], atol=1e-6)
    for layer in range(n - 1):   # HF's last hidden state already has the final norm applied
        assert torch.allclose(cap.residual[layer], ref.hidden_states[layer + 1][0], atol=1e-5)
    assert torch.allclose(cap.last_logits, ref.logits[0, -1], atol=1e-5)
    assert cap.attn_out_norm.shape == (n, t) and cap.mlp_out_norm.shape == (n, t)
    assert torch.all(cap.attn_out_norm > 0) and torch.all(cap.mlp_out_norm > 0)
    # The first norm of each layer reads the residual stream entering it.
    for layer in range(n):
        entering = ref.hidden_states[layer][0]
        first = cap.anatomy.layers[layer].norms[0]
        stats = cap.norms[first]
        assert torch.allclose(stats.input_rms, entering.pow(2).mean(-1).sqrt(), atol=1e-5)
        with torch.no_grad():
            normed = resolve(model, first)(entering)
        assert torch.allclose(stats.output_mean, normed.mean(-1), atol=1e-5)
        assert torch.allclose(stats.output_std, normed.std(-1, correction=0), atol=1e-5)
        assert torch.equal(stats.weight, resolve(model, first).weight.detach())
    final = cap.norms[cap.anatomy.final_norm]
    assert torch.allclose(final.input_rms, cap.residual[-1].pow(2).mean(-1).sqrt(), atol=1e-5)
    assert list(cap.norms)[-1] == cap.anatomy.final_norm          # forward order
    if family == "gpt2":     # no grouped-query attention: every head has its own keys
        assert cap.num_kv_heads == 4 and cap.kv_head_of == [0, 1, 2, 3]
    else:
        assert cap.num_heads == 4 and cap.kv_head_of == [0, 0, 1, 1] and cap.kv_groups() == [[0, 1], [2, 3]]
    assert cap.attention_layers == list(range(n))
    assert model.config._attn_implementation == impl


def test_block_norms_are_the_layer_updates():
    """With the MLP silenced, a Llama layer adds exactly its attention output to the residual."""
    model = tiny_model("llama")
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    cap = capture(model, None, torch.randint(3, 256, (12,)))
    stream = torch.cat([cap.embeddings[None], cap.residual])
    update = (stream[1:] - stream[:-1]).norm(dim=-1)                  # (L, T)
    assert torch.allclose(cap.attn_out_norm, update, atol=1e-5)
    assert torch.all(cap.mlp_out_norm == 0)


def test_hooks_removed_after_exception(models):
    model = models["llama"]
    impl = model.config._attn_implementation

    def boom(module, args):
        raise RuntimeError("boom")

    before = _hooks(model)
    handle = model.model.layers[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            capture(model, None, torch.randint(3, 256, (8,)))
    finally:
        handle.remove()
    assert _hooks(model) == before
    assert model.config._attn_implementation == impl


def test_threads_share_a_model(models):
    model = models["qwen2"]
    prompts = [torch.randint(3, 256, (n,)) for n in (17, 23)]
    alone = [capture(model, None, p) for p in prompts]
    before = _hooks(model)

    def slow(module, args):      # widen the window in which the two forwards interleave
        time.sleep(0.002)

    handles = [layer.register_forward_pre_hook(slow) for layer in model.model.layers]
    results: dict[int, list] = {0: [], 1: []}
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(3):
                results[i].append(capture(model, None, prompts[i]))
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        for h in handles:
            h.remove()
    assert not errors
    for i in (0, 1):
        for cap in results[i]:
            assert torch.equal(cap.token_ids, prompts[i])
            assert torch.allclose(cap.residual, alone[i].residual, atol=1e-6)
            assert cap.attention.layer_indices == alone[i].attention.layer_indices
            assert torch.allclose(attention_map(cap, 2, 1), attention_map(alone[i], 2, 1), atol=1e-6)
            assert set(cap.norms) == set(alone[i].norms)
    assert _hooks(model) == before
    assert model.config._attn_implementation == "sdpa"


def test_prompt_longer_than_context(models):
    model = models["mistral"]
    with pytest.raises(PromptTooLongError, match="300 tokens.*256"):
        capture(model, None, torch.randint(3, 256, (300,)))


def test_memory_budget_keeps_fewer_layers():
    model = tiny_model("llama", attn_implementation="sdpa")
    model.config.num_hidden_layers = 3
    t = 40
    per_layer = (4 + 2) * t * 16 * 4 + t * 64 * 4
    cap = capture(model, None, torch.randint(3, 256, (t,)),
                  CaptureOptions(memory_budget_bytes=int(per_layer * 2.5)))
    # The residual stream (smaller) is kept first; the Q/K of evenly spaced layers fill the rest.
    assert cap.residual_layers == [0, 1, 2] and cap.attention_layers == [0, 2]
    assert cap.residual.shape[0] == 3
    assert cap.attention.where(1).where == "dropped" and "memory budget" in cap.attention.where(1).reason
    assert any("dropped 1 (over the memory budget" in n for n in cap.notes)
    assert "attention kept for 2 of 3 layers" in cap.attention_placement()
    with pytest.raises(LayerNotKept, match="layer 1 was not kept: over the memory budget"):
        attention_map(cap, 1, 0)
    assert cap.attn_out_norm.shape == (3, t)        # per-token statistics stay complete


def test_parts_and_layers_filter(models):
    model = models["phi3"]
    cap = capture(model, None, torch.randint(3, 256, (9,)),
                  CaptureOptions(parts=frozenset({"residual", "logits"}), layers=[1]))
    assert cap.attention is None and cap.norms == {} and cap.attn_out_norm is None
    assert cap.residual_layers == [1] and cap.last_logits is not None
    with pytest.raises(LookupError):
        attention_map(cap, 1, 0)
    with pytest.raises(ValueError, match="unknown capture parts"):
        CaptureOptions(parts=frozenset({"everything"}))


def test_unmappable_model_still_captures_what_it_can():
    model = OddModel().eval()
    before = _hooks(model)
    cap = capture(model, None, torch.randint(0, 50, (6,)))
    assert cap.residual.shape == (3, 6, 16)
    assert cap.attention is None
    assert any("attention" in n for n in cap.notes) and any("LM head" in n for n in cap.notes)
    assert "blocks.0.scale" in cap.norms
    assert _hooks(model) == before



def test_a_capture_keeps_the_texts_of_its_prompt_and_of_its_top_next_tokens(embedded_tokenizer):
    """The capture holds no tokenizer, so capture() decodes what the views show first (the prompt's
    tokens, the top next tokens) before it hands the capture over; nothing adds to it afterwards."""
    from explorer.record.token_text import token_text

    cap = capture(tiny_model("llama"), embedded_tokenizer, list(range(5, 15)), CaptureOptions(top_logits=7))
    top = cap.last_logits.topk(7).indices.tolist()
    assert set(range(5, 15)) | set(top) <= set(cap.vocab)
    assert [cap.token_text(i) for i in top] == [token_text(embedded_tokenizer, i) for i in top]
    assert not [name for name in vars(type(cap)) if name.startswith(("learn", "remember", "add"))]   # no writer on it
