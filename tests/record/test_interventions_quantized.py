"""Interventions on 4-bit and 8-bit models: hooks act on module inputs, so quantization does not
matter. A tiny model quantized by bitsandbytes, and the embedded model in NF4."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.intervention_effects import direct_and_indirect, forward_effect
from explorer.model.load_config import bnb_config
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
from explorer.record.intervention_hooks import intervene, last_logits, record_activations
from explorer.record.interventions import HeadAblation, Patch, parse
from explorer.views.intervene_data import heads_from_labels, ranked_heads
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module", params=["nf4", "int8"])
def quantized(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tiny_model("llama").save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_config(request.param, True, "fp32"),
                                                dtype=torch.float32).eval()


def test_quantized_ablation_changes_the_answer_and_a_factor_of_one_changes_nothing(quantized):
    ids = torch.arange(5, 17)
    plain = last_logits(quantized, ids)
    assert quantized.model.layers[0].self_attn.o_proj.__class__.__name__ in ("Linear4bit", "Linear8bitLt")
    with intervene(quantized, [HeadAblation(1, 2, "scale", 1.0)]):
        torch.testing.assert_close(last_logits(quantized, ids), plain, rtol=0, atol=0)
    with intervene(quantized, parse("h1.2,n0.3,skip:mlp2")):
        assert not torch.allclose(last_logits(quantized, ids), plain)
    torch.testing.assert_close(last_logits(quantized, ids), plain, rtol=0, atol=0)


def test_quantized_residual_patching_of_a_whole_layer_gives_the_clean_logits(quantized):
    clean, corrupt = torch.arange(5, 17), torch.arange(30, 42)
    source = record_activations(quantized, clean)
    with intervene(quantized, [Patch("resid", 1, None)], source, 12):
        torch.testing.assert_close(last_logits(quantized, corrupt)[0], source.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_embedded_nf4_needs_the_heads_its_attribution_ranks_first(embedded_nf4):
    """Zero-ablating the three heads that push the answer most lowers its logit; the view's split
    puts their direct attribution beside the measured change, the rest being indirect."""
    model, tok = embedded_nf4.model, embedded_nf4.tokenizer
    cap = capture(model, tok, "The capital of France is", CaptureOptions(parts=DEFAULT_PARTS | {"components"}))
    att = direct_logit_attribution(cap.components, -1)
    specs = heads_from_labels(ranked_heads(att, 3))
    assert len(specs) == 3
    effect = forward_effect(model, cap.token_ids, specs)
    assert effect.target == att.target
    assert effect.logit_change < 0, effect.to_dict()
    assert effect.prob_after < effect.prob_before
    split = direct_and_indirect(effect, att.heads, specs)
    assert split.direct < 0
    assert abs(split.direct + sum(float(att.heads[s.layer, s.head]) for s in specs)) < 1e-6
    assert abs(split.total - split.direct - split.indirect) < 1e-9
    torch.testing.assert_close(last_logits(model, cap.token_ids)[0], cap.last_logits.float().to(effect_device(model)),
                               rtol=2e-2, atol=2e-2)


def effect_device(model) -> torch.device:
    return next(model.parameters()).device
