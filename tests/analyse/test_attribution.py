"""Direct logit attribution: the parts' contributions plus the embedding and bias terms are the
model's own logit, through LayerNorm (GPT-2), RMSNorm (Llama) and Gemma-2's softcapped head."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.attribution import direct_logit_attribution
from explorer.record.capture import PARTS, CaptureOptions, capture
from tests.tiny_models import tiny_model, with_random_biases


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2", "phi3", "qwen2"])
def run(request):
    model = with_random_biases(tiny_model(request.param))
    ids = torch.randint(3, 250, (15,), generator=torch.Generator().manual_seed(3))
    cap = capture(model, None, ids, CaptureOptions(parts=PARTS))
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].float()                       # (T, V)
    cap_value = model.config.get_text_config().__dict__.get("final_logit_softcapping")
    if cap_value:
        logits = cap_value * torch.atanh(logits / cap_value)
    return cap, logits


@pytest.mark.parametrize("position", [0, 6, -1])
def test_contributions_add_up_to_the_models_logit(run, position):
    cap, logits = run
    att = direct_logit_attribution(cap.components, position)
    expected = float(logits[position, att.target])
    assert abs(att.total() - expected) < 1e-4
    assert abs(att.logit - expected) < 1e-4


def test_default_target_is_the_models_top_prediction(run):
    cap, logits = run
    att = direct_logit_attribution(cap.components, 4)
    assert att.target == int(logits[4].argmax())


def test_next_token_target_is_explained_too(run):
    cap, logits = run
    target = int(cap.token_ids[5])
    att = direct_logit_attribution(cap.components, 4, target)
    assert abs(att.total() - float(logits[4, target])) < 1e-4


def test_ranked_table_is_sorted_by_absolute_contribution(run):
    cap, _ = run
    rows = direct_logit_attribution(cap.components).ranked(10)
    values = [abs(r["value"]) for r in rows]
    assert values == sorted(values, reverse=True) and len(rows) == 10


def test_a_token_not_kept_gives_a_clear_error(run):
    cap, _ = run
    kept = set(cap.components.unembed_ids.tolist())
    missing = next(i for i in range(256) if i not in kept)
    with pytest.raises(KeyError, match="not kept"):
        direct_logit_attribution(cap.components, -1, missing)
