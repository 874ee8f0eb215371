"""Attention for every architecture: families that compute attention in their own modules (Falcon,
BLOOM, MPT, GPT-J) fall back to eager output_attentions within the memory budget, ALiBi included,
and say why when it does not fit; OPT's MLP (fc1/fc2 on the layer) is found."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from explorer.analyse.attention import attention_map, attention_map_pooled, capture_head_summaries
from explorer.model.anatomy import find_anatomy
from explorer.record.capture import CaptureOptions, capture
from explorer.record.capture_file import open_capture, save_capture

CONFIGS = {
    "falcon": ("FalconConfig", dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    new_decoder_architecture=False, multi_query=True, alibi=False)),
    "falcon_alibi": ("FalconConfig", dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          alibi=True, multi_query=False, new_decoder_architecture=False)),
    "bloom": ("BloomConfig", dict(vocab_size=256, hidden_size=64, n_layer=2, n_head=4)),
    "mpt": ("MptConfig", dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=128)),
    "gptj": ("GPTJConfig", dict(vocab_size=256, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=128,
                                bos_token_id=1, eos_token_id=2)),
}


def build(name: str, attn_implementation: str | None = None):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(getattr(transformers, cls)(**kwargs),
                                            attn_implementation=attn_implementation).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_maps_equal_eager_attention(name):
    model = build(name)
    ids = torch.randint(3, 250, (13,), generator=torch.Generator().manual_seed(1))
    cap = capture(model, None, ids)
    reference = build(name, "eager")
    with torch.no_grad():
        eager = reference(input_ids=ids[None], output_attentions=True).attentions          # L × (1, H, T, T)
    assert cap.attention_layers == list(range(len(eager)))
    for layer, probs in enumerate(eager):
        for head in range(probs.shape[1]):
            torch.testing.assert_close(attention_map(cap, layer, head), probs[0, head].float(), atol=1e-5, rtol=0)
    assert any("output_attentions" in n for n in cap.notes)
    pooled, factor = attention_map_pooled(cap, 0, 1, max_size=4)                  # the views' paths work too
    assert factor == 4 and torch.allclose(pooled.sum(-1), torch.ones(pooled.shape[0]), atol=1e-5)
    per_head = capture_head_summaries(cap).per_head()
    assert per_head["entropy"].shape == (len(eager), eager[0].shape[1])


def test_alibi_probabilities_differ_from_plain_softmax_and_match_the_bias():
    """BLOOM's maps carry its ALiBi slopes: later keys get more weight than without the bias."""
    model = build("bloom")
    ids = torch.randint(3, 250, (10,), generator=torch.Generator().manual_seed(2))
    cap = capture(model, None, ids)
    with torch.no_grad():
        eager = model(input_ids=ids[None], output_attentions=True).attentions
    torch.testing.assert_close(attention_map(cap, 1, 0), eager[1][0, 0].float(), atol=1e-5, rtol=0)


def test_eager_fallback_over_the_budget_leaves_attention_out_with_a_reason():
    model = build("bloom")
    cap = capture(model, None, torch.randint(3, 250, (40,)), CaptureOptions(memory_budget_bytes=60_000))
    assert cap.attention is None
    assert any("over the memory budget" in n and "output_attentions" in n for n in cap.notes)


def test_opt_mlp_with_fc1_fc2_on_the_layer_is_found():
    config = transformers.OPTConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=128, word_embed_proj_dim=64)
    model = AutoModelForCausalLM.from_config(config).eval()
    anatomy = find_anatomy(model)
    assert anatomy.layers[0].mlp == "model.decoder.layers.0.fc2"
    cap = capture(model, None, torch.randint(3, 250, (9,)))
    assert cap.mlp_out_norm is not None
    with torch.no_grad():
        x = torch.randn(3, 64)
        layer = model.model.decoder.layers[0]
        expected = layer.fc2(layer.activation_fn(layer.fc1(x)))
    assert expected.shape == (3, 64)


def test_fallback_maps_survive_a_capture_file(tmp_path):

    model = build("mpt")
    cap = capture(model, None, torch.randint(3, 250, (11,)))
    save_capture(cap, str(tmp_path / "mpt.capture"))
    back = open_capture(str(tmp_path / "mpt.capture"))
    torch.testing.assert_close(attention_map(back, 1, 2), attention_map(cap, 1, 2))


def test_fallback_layers_hold_their_maps_and_no_empty_queries_and_older_files_still_open(tmp_path):
    """The fallback stores probabilities, not Q/K: its layers say so (None) rather than carry empty
    tensors shaped to fit. Files written when they did carry them still open, with the same maps."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    cap = capture(build("bloom"), None, torch.randint(3, 250, (9,)))
    store = cap.attention
    assert store.maps and all(rec.q is None and rec.k is None for rec in store.layers.values())
    assert store.num_tokens == 9 and store.sizes(1) == (9, 9) and store.where(1).where == "host"
    save_capture(cap, str(tmp_path / "now.capture"))
    with safe_open(str(tmp_path / "now.capture"), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert not [k for k in tensors if k.endswith((".q", ".k"))]
    for layer in store.layers:                     # what the writer wrote before: empty Q/K beside the maps
        tensors[f"attn.{layer}.q"] = torch.empty(1, cap.num_heads, 9, 0)
        tensors[f"attn.{layer}.k"] = torch.empty(1, cap.num_kv_heads, 9, 0)
    save_file(tensors, str(tmp_path / "before.capture"), metadata=meta)
    back = open_capture(str(tmp_path / "before.capture"))
    assert all(rec.q is None for rec in back.attention.layers.values())
    torch.testing.assert_close(attention_map(back, 1, 2), attention_map(cap, 1, 2))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_components_add_up_on_families_with_their_own_blocks(name):
    """BLOOM and MPT add the residual inside their blocks, Falcon adds attention into the MLP's
    output in place: each head's and MLP's share must still add up to the next residual."""
    from explorer.analyse.attribution import attention_bias, head_outputs
    model = build(name)
    cap = capture(model, None, torch.arange(3, 20), CaptureOptions(parts={"components"}))
    comp = cap.components
    assert comp is not None, cap.notes
    for layer in range(comp.num_layers):
        parts = comp.resid[layer] + head_outputs(comp, layer).sum(0) + attention_bias(comp, layer) + comp.mlp[layer]
        assert (parts - comp.resid[layer + 1]).abs().max() < 1e-5, f"layer {layer}"


def test_overlapping_fallback_captures_restore_the_attention_setting_once_both_are_done():
    """Two threads' fallback forwards overlap: the second must not save "eager" as the setting to
    restore, and the first must not switch back while the second still runs."""
    from explorer.record.eager_fallback import FallbackPlan
    model = build("falcon")
    before = model.config._attn_implementation
    assert before != "eager"
    plan = FallbackPlan(kwargs={"output_attentions": True})
    first, second = plan.running(model), plan.running(model)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert model.config._attn_implementation == "eager"       # the second is still running
    second.__exit__(None, None, None)
    assert model.config._attn_implementation == before
