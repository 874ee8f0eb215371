"""The "components" capture part: each head's, the attention bias's and the MLP's share of the
residual stream add up to the next residual, on every family's own layout, and in 4-bit."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.attribution import attention_bias, head_outputs, remainder
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.record.weights import dense_weight, find_output_projection, probe_norm
from tests.tiny_models import tiny_model, with_random_biases

FAMILIES5 = ("llama", "qwen2", "phi3", "gemma2", "gpt2")


@pytest.fixture(scope="module")
def captures():
    torch.manual_seed(1)
    ids = torch.randint(3, 250, (17,))
    out = {}
    for family in FAMILIES5:
        model = with_random_biases(tiny_model(family))
        out[family] = (model, ids, capture(model, None, ids, CaptureOptions(parts=PARTS)))
    return out


@pytest.mark.parametrize("family", FAMILIES5)
def test_components_add_up_to_next_residual(captures, family):
    _, _, cap = captures[family]
    comp = cap.components
    assert comp is not None, cap.notes
    for layer in range(comp.num_layers):
        parts = (comp.resid[layer].float() + head_outputs(comp, layer).sum(0)
                 + attention_bias(comp, layer) + comp.mlp[layer].float())
        err = (parts - comp.resid[layer + 1].float()).abs().max()
        assert err < 1e-5, f"layer {layer}: parts miss the next residual by {err}"
        assert remainder(comp, layer).abs().max() < 1e-5


@pytest.mark.parametrize("family", FAMILIES5)
def test_components_residual_matches_the_captured_residual_stream(captures, family):
    _, _, cap = captures[family]
    torch.testing.assert_close(cap.components.resid[1:], cap.residual)
    torch.testing.assert_close(cap.components.resid[0], cap.embeddings)


def test_components_store_z_linear_in_tokens_not_a_map_per_head(captures):
    _, ids, cap = captures["llama"]
    comp = cap.components
    t, layers, heads = len(ids), cap.num_layers, cap.num_heads
    assert comp.z.shape == (layers, t, heads, cap.hidden_size // heads)
    assert comp.w_o.shape == (layers, heads, cap.hidden_size // heads, cap.hidden_size)
    assert comp.values.shape == (layers, cap.num_kv_heads, t, cap.hidden_size // heads)
    assert all(x.dim() < 4 or t not in x.shape[-2:] or x.shape[-1] != t for x in (comp.z, comp.values))


def test_gemma2_post_attention_norm_is_linearised_per_layer(captures):
    comp = captures["gemma2"][2].components
    assert all(p is not None for p in comp.attn_post_norm)
    assert all(p is None for p in captures["llama"][2].components.attn_post_norm)


def test_gpt2_output_projection_bias_is_its_own_component(captures):
    model, _, cap = captures["gpt2"]
    comp = cap.components
    assert comp.b_o is not None
    torch.testing.assert_close(comp.b_o[0], model.transformer.h[0].attn.c_proj.bias.float())


def test_components_are_opt_in():
    model = tiny_model("llama")
    cap = capture(model, None, torch.arange(3, 12))
    assert cap.components is None
    assert "components" not in CaptureOptions().parts


def test_components_over_the_memory_budget_leave_a_note():
    model = tiny_model("llama")
    cap = capture(model, None, torch.arange(3, 12), CaptureOptions(parts={"components"}, memory_budget_bytes=4096))
    assert cap.components is None
    assert any("components left out" in n for n in cap.notes)


def test_probe_finds_layernorm_centering_and_rmsnorm_without():
    ln = torch.nn.LayerNorm(8)
    torch.nn.init.normal_(ln.weight)
    torch.nn.init.normal_(ln.bias)
    gain, bias, center = probe_norm(ln, 8)
    assert center and bias is not None
    torch.testing.assert_close(gain, ln.weight.detach() / (1 + ln.eps) ** 0.5, rtol=1e-4, atol=1e-5)
    rms = tiny_model("llama").model.norm
    _, bias, center = probe_norm(rms, 64)
    assert not center and bias is None


def test_probe_handles_an_odd_width_where_the_alternating_probe_is_not_centred():
    ln = torch.nn.LayerNorm(7)
    torch.nn.init.normal_(ln.weight)
    gain, _, center = probe_norm(ln, 7)
    assert center
    torch.testing.assert_close(gain, ln.weight.detach() / (1 + ln.eps) ** 0.5, rtol=1e-4, atol=1e-5)


def test_captures_share_one_dequantised_w_o_and_do_not_overwrite_each_other():
    """W_o is read once per model; each capture still gets its own activation buffers."""
    model = tiny_model("llama")
    opts = CaptureOptions(parts={"components"})
    first = capture(model, None, torch.arange(3, 14), opts).components
    z_before, resid_before = first.z.clone(), first.resid.clone()
    second = capture(model, None, torch.arange(40, 51), opts).components
    assert second.w_o.data_ptr() == first.w_o.data_ptr()
    assert second.z.data_ptr() != first.z.data_ptr()
    torch.testing.assert_close(first.z, z_before, rtol=0, atol=0)
    torch.testing.assert_close(first.resid, resid_before, rtol=0, atol=0)
    assert not torch.equal(first.z, second.z)
    other = capture(tiny_model("llama"), None, torch.arange(3, 14), opts).components
    assert other.w_o.data_ptr() != first.w_o.data_ptr()


def test_a_4bit_weight_read_through_its_forward_equals_the_dequantised_one():
    """The identity probe is what dense_weight uses once bitsandbytes has repacked a 4-bit weight
    for its AVX-512 CPU kernel (dequantize_4bit cannot read that layout); both must agree."""
    import bitsandbytes as bnb

    from explorer.record.weights import _probed_weight

    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 32)
    layer = bnb.nn.Linear4bit(64, 32, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4")
    layer.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    layer = layer.to("cpu")
    dequantised = dense_weight(layer)                                        # (32, 64), before any forward
    torch.testing.assert_close(_probed_weight(layer), dequantised, rtol=1e-2, atol=2e-3)
    torch.testing.assert_close(dense_weight(layer), dequantised, rtol=1e-2, atol=2e-3)   # after a forward too
    assert (dequantised - dense.weight).abs().max() < 0.05                   # and NF4 is close to the original


@pytest.mark.slow
def test_nf4_output_projection_is_dequantised_and_parts_add_up(embedded_nf4):
    model, tok = embedded_nf4.model, embedded_nf4.tokenizer
    attn = model.model.layers[0].self_attn
    proj = attn.get_submodule(find_output_projection(attn, model.config.hidden_size))
    assert getattr(proj.weight, "quant_state", None) is not None, "the embedded model should load in 4-bit"
    x = torch.randn(3, proj.in_features, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = proj(x).float()
    torch.testing.assert_close(x.float() @ dense_weight(proj).t(), ref, rtol=2e-2, atol=2e-2)
    cap = capture(model, tok, "The capital of France is Paris, and the capital of Italy is",
                  CaptureOptions(parts=PARTS))
    comp = cap.components
    for layer in (0, comp.num_layers // 2, comp.num_layers - 1):
        scale = comp.resid[layer + 1].float().abs().max()
        assert remainder(comp, layer).abs().max() < 0.05 * scale


def test_components_stay_on_the_host_without_a_gpu_and_on_host_is_a_no_op():
    from explorer.record.components_recorder import keep_on_device
    assert not keep_on_device(torch.device("cpu"), 1, True)
    assert not keep_on_device(torch.device("cpu"), 1, None)
    comp = capture(tiny_model("llama"), None, torch.arange(3, 12), CaptureOptions(parts={"components"})).components
    assert not comp.on_device
    z = comp.z
    assert comp.on_host() is comp and comp.z is z
