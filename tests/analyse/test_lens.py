"""The logit lens at the last layer is the model's own next-token distribution; subsets agree."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.derived import Derived
from explorer.analyse.lens import LensHead, logit_lens
from explorer.record.capture import CaptureOptions, capture
from tests.tiny_models import FAMILIES, tiny_model


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layer_is_the_model_output(family):
    model = tiny_model(family)
    ids = torch.randint(3, 256, (11,))
    cap = capture(model, None, ids)
    lens = logit_lens(cap, LensHead.from_model(model), k=4)
    n = model.config.num_hidden_layers
    assert lens.token_ids.shape == (n, 11, 4) and lens.layers == list(range(n))
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].float()          # (T, V), softcapped for Gemma-2
    top = torch.softmax(logits, -1).topk(4)
    assert torch.equal(lens.token_ids[-1], top.indices)
    assert torch.allclose(lens.probs[-1], top.values, atol=1e-5)
    assert torch.all(lens.probs[..., :-1] >= lens.probs[..., 1:])        # sorted
    assert torch.all(lens.probs.sum(-1) <= 1 + 1e-5)


def test_subsets_agree_with_full_and_cache():
    model = tiny_model("qwen2")
    cap = capture(model, None, torch.randint(3, 256, (9,)))
    head = LensHead.from_model(model)
    results = Derived()
    part = logit_lens(cap, head, k=3, layers=[1], positions=[0, -1], derived=results)
    assert part.positions == [0, 8] and 3 not in results.lens          # subsets are not kept
    full = logit_lens(cap, head, k=3, decode=str, derived=results)
    assert torch.equal(part.token_ids[0], full.token_ids[1, [0, 8]])
    assert results.lens[3] is full                                      # kept beside the capture
    assert set(results.vocab) == set(full.token_ids.unique().tolist()) and not hasattr(cap, "lens_cache")
    assert logit_lens(cap, None, k=3, layers=[1], derived=results).token_ids.shape == (1, 9, 3)
    with pytest.raises(KeyError, match="not captured"):
        logit_lens(capture(model, None, torch.randint(3, 256, (5,)), CaptureOptions(layers=[0])), head, layers=[2])
