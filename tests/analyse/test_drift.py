"""Quality drift: the measures themselves, where drift enters, and real precisions of real models."""
from __future__ import annotations

import copy

import pytest
import torch

from explorer.analyse.attention import layer_probabilities
from explorer.analyse.drift import (
    _plain_fingerprint,
    attention_difference,
    by_rank,
    compare_fingerprints,
    fingerprint,
    next_token_kl,
    residual_drift,
    top1_agreement,
)
from explorer.compare.run import drift_ids, take_fingerprints
from explorer.model.loading import LoadConfig, load_model, unload
from tests.tiny_models import tiny_model

IDS = torch.tensor([1, 17, 42, 99, 3, 250, 7, 64, 128, 5, 200, 31])


# --------------------------------------------------------------------------- measures on tensors


def test_kl_is_zero_for_equal_logits_and_matches_torch_kl_div_otherwise():
    torch.manual_seed(0)
    a, b = torch.randn(6, 50), torch.randn(6, 50)
    assert torch.equal(next_token_kl(a, a), torch.zeros(6))
    expected = torch.nn.functional.kl_div(torch.log_softmax(b, -1), torch.log_softmax(a, -1), log_target=True,
                                          reduction="none").sum(-1)
    torch.testing.assert_close(next_token_kl(a, b), expected)
    assert (next_token_kl(a, b) > 0).all()


def test_top1_agreement_counts_matching_argmax():
    a = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    b = torch.tensor([[0.0, 4.0, 1.0], [0.0, 3.0, 0.0], [0.0, 0.0, 9.0]])
    assert top1_agreement(a, b).tolist() == [True, False, True]


def test_residual_drift_gives_cosine_and_relative_error_per_layer_and_position():
    torch.manual_seed(0)
    ref = torch.randn(3, 5, 16)
    cos, rel = residual_drift(ref, ref.clone())
    assert torch.equal(rel, torch.zeros(3, 5)) and torch.allclose(cos, torch.ones(3, 5))
    noisy = ref.clone()
    noisy[1] += 0.1 * ref[1].norm(dim=-1, keepdim=True) / 4 * torch.randn(5, 16).sign()   # |Δ| = 0.1·|a|
    cos, rel = residual_drift(ref, noisy)
    assert torch.equal(rel[0], torch.zeros(5)) and torch.equal(rel[2], torch.zeros(5))
    torch.testing.assert_close(rel[1], torch.full((5,), 0.1), rtol=1e-4, atol=1e-6)
    assert (cos[1] < 1).all()


def test_reference_is_the_highest_precision_first():
    assert by_rank(["nf4", "bf16", "int8", "fp32", "fp4", "bf16"]) == ["fp32", "bf16", "int8", "nf4", "fp4"]


# --------------------------------------------------------------------------- fingerprints of tiny models


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_fingerprint_logits_equal_the_models_own_logits_at_every_position(family):
    model = tiny_model(family)
    fp = fingerprint(model, None, IDS, "p")
    with torch.inference_mode():
        expected = model(input_ids=IDS[None]).logits[0].float()                  # (T, V)
    assert fp.logits.shape == (len(IDS), model.config.vocab_size)
    torch.testing.assert_close(fp.logits, expected, rtol=1e-4, atol=1e-4)
    assert fp.residual.shape[:2] == (3, len(IDS)) and fp.layers == [0, 1, 2]


def test_same_model_has_zero_drift_everywhere():
    model = tiny_model("llama")
    a = [fingerprint(model, None, IDS, "p")]
    b = [fingerprint(copy.deepcopy(model), None, IDS, "p")]
    d = compare_fingerprints(a, b, "fp32", "fp32")
    assert d.kl_mean == 0.0 and d.kl_max == 0.0 and d.top1_agreement == 1.0
    assert d.residual_rel_error == [0.0, 0.0, 0.0]
    assert all(c > 1 - 1e-6 for c in d.residual_cosine)
    assert d.attention_layers == [0, 1, 2] and all(v == 0.0 for row in d.attention_diff for v in row)


def test_drift_enters_at_the_layer_whose_weights_changed():
    """Perturb only layer 1's attention: layer 0 is untouched, layer 1 is where the error appears."""
    model = tiny_model("llama")
    changed = copy.deepcopy(model)
    with torch.no_grad():
        w = changed.model.layers[1].self_attn.q_proj.weight
        w.add_(0.5 * torch.randn_like(w))
    d = compare_fingerprints([fingerprint(model, None, IDS, "p")], [fingerprint(changed, None, IDS, "p")],
                             "fp32", "changed")
    assert d.residual_rel_error[0] == 0.0 and d.residual_rel_error[1] > 1e-3
    assert d.largest_jump_layer == 1
    layer0, layer1 = d.attention_diff[0], d.attention_diff[1]
    assert max(layer0) == 0.0 and min(layer1) > 0.0        # q_proj feeds every head of layer 1
    assert d.kl_mean > 0


def test_attention_difference_is_a_total_variation_in_zero_one():
    """Against a model whose heads differ completely, the distance is large but never above 1."""
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    fa, fb = fingerprint(a, None, IDS, "p"), fingerprint(b, None, IDS, "p")
    layers, diff = attention_difference(fa.attention, fb.attention)
    assert layers == [0, 1, 2] and diff.shape == (3, 4)
    assert (diff > 0).all() and (diff <= 1).all()
    # row 0 can only attend to itself in both, so it contributes 0: the mean is below the max over rows ≥ 1 - ...
    p, q = layer_probabilities(fa.attention, 0), layer_probabilities(fb.attention, 0)   # (H, T, T)
    torch.testing.assert_close(diff[0], 0.5 * (p - q).abs().sum(-1).mean(-1), rtol=1e-5, atol=1e-6)


def test_mismatched_tokenization_is_refused():
    model = tiny_model("llama")
    a = fingerprint(model, None, IDS, "p")
    b = fingerprint(model, None, IDS.flip(0), "p")
    with pytest.raises(ValueError, match="tokenized"):
        compare_fingerprints([a], [b], "fp32", "fp32")


# --------------------------------------------------------------------------- real precisions


@pytest.mark.slow
def test_embedded_nf4_drifts_from_bf16_and_bf16_does_not_drift_from_itself(embedded_bf16, embedded_nf4):
    prompts = ["What is the capital of France?"]
    ref = take_fingerprints(embedded_bf16, prompts, None, attention=True)
    again = load_model(LoadConfig(precision="bf16"))          # a separate load of the same precision
    try:
        same = compare_fingerprints(ref, take_fingerprints(again, prompts, None, attention=True), "bf16", "bf16")
    finally:
        unload(again)
    assert same.kl_mean == 0.0 and same.kl_max == 0.0 and same.top1_agreement == 1.0
    assert max(same.residual_rel_error) == 0.0
    assert max(v for row in same.attention_diff for v in row) == 0.0

    nf4 = compare_fingerprints(ref, take_fingerprints(embedded_nf4, prompts, None, attention=True), "bf16", "nf4")
    assert len(nf4.layers) == 30 and nf4.positions == sum(len(drift_ids(embedded_bf16, p)) for p in prompts)
    assert nf4.kl_mean > 1e-4 and nf4.top1_agreement < 1.0
    assert min(nf4.residual_cosine) < 0.999 and nf4.residual_rel_error[-1] > 0.01
    assert max(v for row in nf4.attention_diff for v in row) > 1e-3


def test_the_hookless_fallback_gives_the_same_logits_and_comparable_residuals():

    model = tiny_model("llama")
    hooked, plain = fingerprint(model, None, IDS, "p"), _plain_fingerprint(model, None, IDS, "p", "note")
    torch.testing.assert_close(plain.logits, hooked.logits, rtol=1e-4, atol=1e-4)
    assert plain.residual.shape == hooked.residual.shape and plain.attention is None and plain.notes == ["note"]
    torch.testing.assert_close(plain.residual[:-1], hooked.residual[:-1])     # the last may be normed
    d = compare_fingerprints([plain], [_plain_fingerprint(model, None, IDS, "p", "note")], "fp32", "fp32")
    assert d.kl_mean == 0.0 and d.attention_diff == [] and d.notes == ["note"]
