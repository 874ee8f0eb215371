"""Attention probabilities recomputed from recorded Q/K equal eager output_attentions (fp32),
with padding, GQA, Gemma-2 softcapping and sliding windows, Phi-3's fused qkv and GPT-2."""
from __future__ import annotations

import math

import pytest
import torch

from explorer.analyse.attention import blockwise_summaries, fused_summaries, layer_probabilities, layer_rows, pooled, probabilities, summaries
from explorer.model.anatomy import find_anatomy, resolve
from explorer.record.attention_fn import Recorder, explorer_attention_enabled, recording
from explorer.record.attention_store import AttentionStore
from explorer.record.offload import Offloader
from tests.tiny_models import FAMILIES, tiny_model

TOL = 1e-4


def record_attention(model, input_ids, attention_mask=None, offload=None):
    """A (possibly padded) batch through the recording attention function: (store, output).
    capture() takes one prompt; batches exercise masks and padding that one prompt cannot."""
    config = model.config.get_text_config()
    heads = int(config.num_attention_heads)
    store = AttentionStore(num_heads=heads, num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads))
    layer_of = {id(resolve(model, lp.attention)): lp.index for lp in find_anatomy(model).layers if lp.attention}
    offload = offload or Offloader()
    with torch.inference_mode(), explorer_attention_enabled(model) as switched, \
            recording(Recorder(store, layer_of, None, offload)):
        assert switched
        output = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        offload.finish()
    return store, output


@pytest.fixture(scope="module")
def pairs():
    """Same weights twice: the family's default implementation and eager."""
    return {f: (tiny_model(f), tiny_model(f, attn_implementation="eager")) for f in FAMILIES}


def _eager(model, ids, mask=None):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_matches_eager_with_left_padding(pairs, family):
    model, eager = pairs[family]
    torch.manual_seed(1)
    t = 24  # longer than Gemma-2's sliding window of 8
    ids = torch.randint(3, 256, (2, t))
    mask = torch.ones(2, t, dtype=torch.long)
    mask[1, :7] = 0                      # left padding on the second prompt
    store, out = record_attention(model, ids, mask)
    ref = _eager(eager, ids, mask)
    assert store.layer_indices == list(range(model.config.num_hidden_layers))
    for layer in store.layer_indices:
        for b in range(2):
            valid = mask[b].bool()
            ours = layer_probabilities(store, layer, batch=b)          # (H, T, T)
            theirs = ref.attentions[layer][b]
            assert ours.shape == theirs.shape
            # Rows of real tokens must match exactly; fully padded rows are undefined in SDPA.
            assert (ours[:, valid] - theirs[:, valid]).abs().max() < TOL
    # The recording implementation changes nothing in the model's output.
    assert (out.logits[:, -1] - ref.logits[:, -1]).abs().max() < 1e-4
    assert model.config._attn_implementation != "explorer"


@pytest.mark.parametrize("family", ["gemma2", "phi3", "llama"])
def test_matches_eager_unpadded_long(pairs, family):
    model, eager = pairs[family]
    ids = torch.randint(3, 256, (1, 70))
    store, _ = record_attention(model, ids)
    ref = _eager(eager, ids)
    for layer in store.layer_indices:
        assert (layer_probabilities(store, layer) - ref.attentions[layer][0]).abs().max() < TOL
    if family == "gemma2":
        # Sliding layers put zero mass beyond the window; full layers do not.
        sliding = [l for l in store.layer_indices if store.layers[l].sliding_window]
        assert sliding
        p = probabilities(store, sliding[0], 0)
        assert p[40, :40 - 8 + 1].abs().max() == 0
        assert p[40, 40 - 8 + 1:41].sum() == pytest.approx(1.0, abs=1e-5)


def test_gqa_structure(pairs):
    model, _ = pairs["llama"]
    store, _ = record_attention(model, torch.randint(3, 256, (1, 10)))
    assert store.num_heads == 4 and store.num_kv_heads == 2
    assert store.kv_groups() == [[0, 1], [2, 3]]
    rec = store.layers[0]
    assert rec.q.shape[1] == 4 and rec.k.shape[1] == 2       # keys are stored un-repeated


def _summaries_from_maps(store: AttentionStore, layer: int):
    maps = layer_probabilities(store, layer)                     # (H, T, T)
    t = maps.shape[-1]
    ent = -torch.special.xlogy(maps, maps).sum(-1)
    dist = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).float()
    return ent, maps[..., 0], (maps * dist).sum(-1)


@pytest.mark.parametrize("family", ["mistral", "gemma2", "gpt2"])
def test_blockwise_summaries_equal_full_maps(pairs, family):
    model, _ = pairs[family]
    store, _ = record_attention(model, torch.randint(3, 256, (1, 37)))
    s = summaries(store, block_elements=4 * 37 * 3)        # force blocks of 3 query rows
    assert s.entropy.shape == (3, 4, 37)
    for li, layer in enumerate(s.layers):
        ent, first, look = _summaries_from_maps(store, layer)
        assert (s.entropy[li] - ent).abs().max() < TOL
        assert (s.first_token[li] - first).abs().max() < TOL
        assert (s.lookback[li] - look).abs().max() < TOL
    per = s.per_head()
    assert per["entropy"].shape == (3, 4)
    assert torch.all(s.first_token[:, :, 0] > 0.999)            # position 0 can only see itself


def test_pooled_map_preserves_rows_and_mass(pairs):
    model, _ = pairs["qwen2"]
    t = 50
    store, _ = record_attention(model, torch.randint(3, 256, (1, t)))
    full = probabilities(store, 1, 2)
    pmap, factor = pooled(store, 1, 2, max_size=16, block_elements=64)     # several row blocks
    assert factor == math.ceil(t / 16) and pmap.shape == (math.ceil(t / factor),) * 2
    assert torch.allclose(pmap.sum(-1), torch.ones(pmap.shape[0]), atol=1e-5)
    # Cell (i, j): mean over the block's queries of their total mass on block j.
    i, j = 5, 2
    expected = full[i * factor:(i + 1) * factor, j * factor:(j + 1) * factor].sum(-1).mean()
    assert pmap[i, j] == pytest.approx(float(expected), abs=1e-5)
    same, one = pooled(store, 1, 2, max_size=t)
    assert one == 1 and torch.equal(same, full)


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_fused_summaries_match_blockwise(pairs, family):
    """Unmasked causal layers take the fused-kernel path; it must agree with the explicit maps."""
    model, _ = pairs[family]
    store, _ = record_attention(model, torch.randint(3, 256, (1, 45)))
    for layer in store.layer_indices:
        prep = layer_rows(store, layer)
        assert prep.fusable()
        fused = fused_summaries(prep)
        assert fused is not None, "fused kernel unavailable on this machine"
        explicit = blockwise_summaries(prep)
        assert (fused - explicit).abs().max() < TOL


def test_every_kernels_logsumexp_layout_reads_as_heads_by_tokens():
    """flash (1, H, T), memory-efficient (1, H, T padded to 32) and cuDNN (1, H, T, 1) give one (H, T)."""
    from explorer.analyse.head_stats import _lse_rows

    want = torch.arange(3 * 40, dtype=torch.float32).view(3, 40)
    padded = torch.cat([want, torch.full((3, 24), float("nan"))], dim=1)
    for lse in (want[None], padded[None], want[None, ..., None]):
        assert torch.equal(_lse_rows(lse, 40), want)
