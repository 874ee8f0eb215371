"""Activation patching on tiny fp32 models: batched rows agree with one patch per forward, the
last layer's last position restores the clean answer, and cancel/progress/lengths behave."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from explorer.analyse.intervention_effects import compare_logits, direct_and_indirect, forward_effect
from explorer.analyse.patching import patch_heads, patch_residual, prepare, run_patches
from explorer.model.worker import RequestCancelled
from explorer.record.intervention_hooks import intervene, last_logits
from explorer.record.interventions import BadIntervention, HeadAblation, Patch, parse
from tests.tiny_models import tiny_model, with_random_biases

FAMILIES5 = ("llama", "qwen2", "phi3", "gemma2", "gpt2")


def _pair(t: int = 9):
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(3, 250, (t,), generator=g)
    corrupt = clean.clone()
    corrupt[2] = (clean[2] + 17) % 250 + 3                      # one token differs, like a real corruption
    return clean, corrupt


@pytest.mark.parametrize("family", FAMILIES5)
def test_residual_patching_batched_equals_one_forward_per_patch(family):
    model = with_random_biases(tiny_model(family))
    clean, corrupt = _pair()
    setup = prepare(model, clean, corrupt)
    result = patch_residual(model, setup, rows=7)              # 27 patches in batches of 7 rows
    n_layers, t = result.scores.shape
    for layer, pos in ((0, 2), (1, 5), (n_layers - 1, t - 1)):
        with intervene(model, [Patch("resid", layer, pos)], setup.source, t):
            logits = last_logits(model, corrupt)[0]
        expected = float(logits[setup.answer] - logits[setup.foil])
        assert abs(float(result.diffs[layer, pos]) - expected) < 1e-4
    assert abs(float(result.scores[-1, -1]) - 1.0) < 1e-4      # the last residual at the end is the clean answer
    # positions before the corrupted token carry nothing of it: patching them changes nothing
    assert float(result.scores[:, :2].abs().max()) < 1e-4


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_head_patching_batched_equals_one_forward_per_head(family):
    model = tiny_model(family)
    clean, corrupt = _pair()
    setup = prepare(model, clean, corrupt)
    result = patch_heads(model, setup, rows=5)
    assert result.scores.shape == (3, 4)
    for layer, head in ((0, 1), (2, 3)):
        with intervene(model, [Patch("head", layer, None, head)], setup.source, len(clean)):
            logits = last_logits(model, corrupt)[0]
        assert abs(float(result.diffs[layer, head]) - float(logits[setup.answer] - logits[setup.foil])) < 1e-4
    assert result.to_dict()["site"] == "head"


def test_progress_counts_every_patch_and_cancel_stops_between_batches():
    model = tiny_model("llama")
    setup = prepare(model, *_pair())
    seen = []
    patches = [Patch("resid", 0, p) for p in range(9)]
    skipped = run_patches(model, setup, patches, rows=4, progress=lambda d, n: seen.append((d, n)))
    assert seen == [(6, 9), (9, 9)]             # positions 0 and 1 hold the same tokens: not run, counted
    setup_all = dataclasses.replace(setup, corrupted=None)
    torch.testing.assert_close(run_patches(model, setup_all, patches, rows=4), skipped, rtol=0, atol=1e-5)
    cancel = threading.Event()
    with pytest.raises(RequestCancelled):
        run_patches(model, setup, patches, rows=4, progress=lambda d, n: cancel.set(), cancel=cancel)


def test_prompts_of_different_lengths_and_bad_tokens_are_refused():
    model = tiny_model("llama")
    with pytest.raises(BadIntervention, match="same token length"):
        prepare(model, torch.arange(3, 12), torch.arange(3, 11))
    with pytest.raises(BadIntervention, match="outside the vocabulary"):
        prepare(model, torch.arange(3, 12), torch.arange(4, 13), answer=999)


def test_forward_effect_reports_the_target_before_and_after():
    model = tiny_model("qwen2")
    ids = torch.arange(3, 14)
    plain = last_logits(model, ids)[0]
    effect = forward_effect(model, ids, parse("h1.0,h2.3"))
    assert effect.target == int(plain.argmax())
    assert abs(effect.logit_before - float(plain[effect.target])) < 1e-5
    assert effect.kl > 0 and effect.logit_after != effect.logit_before
    assert len(effect.top_before) == 10 and effect.top_before[0][0] == effect.target
    same = compare_logits(plain, plain, [])
    assert same.kl == 0 and same.logit_change == 0
    heads = torch.zeros(3, 4)
    heads[1, 0] = 2.0
    split = direct_and_indirect(effect, heads, [HeadAblation(1, 0), HeadAblation(2, 3)])
    assert split.direct == -2.0 and abs(split.total - split.direct - split.indirect) < 1e-9
    assert direct_and_indirect(effect, heads, [HeadAblation(1, 0, "mean")]) is None
