"""Where a capture keeps each layer's Q/K (GPU, host, dropped with why), the typed error for a
dropped layer, the reused host-buffer pool, and the tiled maths (online-softmax summaries,
pooled maps, windows) against the exact full maps."""
from __future__ import annotations

import gc
import math

import pytest
import torch

from explorer.analyse.attention import (
    LayerNotKept,
    attention_map,
    attention_map_pooled,
    attention_window,
    blockwise_summaries,
    capture_head_summaries,
    layer_probabilities,
    layer_rows,
    online_summaries,
    pooled,
    probabilities,
    window,
)
from explorer.analyse.capture_bundle import describe_capture
from explorer.model.errors import ExplorerError
from explorer.record import mask_rule
from explorer.record.attention_fn import blockwise_eager_attention
from explorer.record.attention_store import Placement, placement_summary
from explorer.record.buffer_pool import BufferPool
from explorer.record.capture import CaptureOptions, capture
from explorer.record.capture_file import open_capture, save_capture
from explorer.record.offload import Offloader
from explorer.record.placement import Budgets, place_layers
from tests.record.test_attention import record_attention
from tests.tiny_models import tiny_model

TOL = 1e-5


# ---------------------------------------------------------------------------- placement

def test_place_layers_gpu_then_host_then_dropped_with_reason():
    placement = place_layers(list(range(8)), per_layer=100, budgets=Budgets(gpu=350, host=250))
    where = {layer: p.where for layer, p in placement.items()}
    assert [l for l in where if where[l] == "gpu"] == [0, 1, 2]
    assert [l for l in where if where[l] == "host"] == [3, 7]          # evenly spaced over the rest
    dropped = [l for l in where if where[l] == "dropped"]
    assert dropped == [4, 5, 6] and "memory budget" in placement[4].reason
    text = placement_summary(placement)
    assert "kept for 5 of 8 layers" in text and "on the GPU: 0–2" in text and "in host memory: 3, 7" in text
    assert "dropped 4–6 (over the memory budget" in text


def test_tiny_budget_drops_layers_and_a_dropped_layer_raises_a_typed_error():
    model = tiny_model("llama", attn_implementation="sdpa")
    t = 40
    qk = (4 + 2) * t * 16 * 4
    residual = 3 * t * 64 * 4
    cap = capture(model, None, torch.randint(3, 256, (t,)),
                  CaptureOptions(memory_budget_bytes=residual + qk + 10, gpu_budget_bytes=0))
    assert cap.attention_layers == [2]
    assert {l: p.where for l, p in cap.attention.placement.items()} == {0: "dropped", 1: "dropped", 2: "host"}
    assert "dropped 0–1 (over the memory budget" in cap.attention_placement()
    for ask in (lambda: attention_map(cap, 0, 1), lambda: attention_map_pooled(cap, 1, 0, 8),
                lambda: attention_window(cap, 0, 0, (0, 4), (0, 4)), lambda: layer_rows(cap.attention, 1)):
        with pytest.raises(LayerNotKept, match="layer [01] was not kept: over the memory budget") as info:
            ask()
        assert isinstance(info.value, ExplorerError) and not isinstance(info.value, KeyError)
    assert capture_head_summaries(cap).layers == [2]                      # kept layers still answer


def test_placement_travels_in_the_file_and_show_tells_it(tmp_path):
    model = tiny_model("qwen2", attn_implementation="sdpa")
    t = 24
    qk = (4 + 2) * t * 16 * 4
    cap = capture(model, None, torch.randint(3, 256, (t,)),
                  CaptureOptions(memory_budget_bytes=3 * t * 64 * 4 + 2 * qk + 10))
    path = tmp_path / "p.capture"
    save_capture(cap, path)
    back = open_capture(path)
    assert back.attention.placement == cap.attention.placement
    assert back.attention.where(1) == Placement("dropped", cap.attention.where(1).reason)
    assert "attention kept for 2 of 3 layers" in describe_capture(back)
    with pytest.raises(LayerNotKept, match="over the memory budget"):
        attention_map(back, 1, 0)


# ---------------------------------------------------------------------------- the pool

def test_pool_hands_back_buffers_of_a_released_owner():
    pool = BufferPool(pin=False)

    class Owner:
        pass
    first = Owner()
    a, raw_a = pool.take((4, 8), torch.float32)
    pool.lease(first, [raw_a])
    b, _ = pool.take((4, 8), torch.float32)                       # the first is still held: a new one
    assert pool.stats.allocations == 2 and a.data_ptr() != b.data_ptr()
    del first, a
    gc.collect()
    c, _ = pool.take((2, 16), torch.float32)                     # same size, other shape: reused
    assert pool.stats.allocations == 2 and pool.stats.reuses == 1 and c.data_ptr() == raw_a.data_ptr()
    d, _ = pool.take((8,), torch.bfloat16)                        # another size: allocated
    assert pool.stats.allocations == 3 and d.dtype == torch.bfloat16 and d.shape == (8,)


def test_pool_serves_turns_of_other_lengths_from_the_buffers_it_has():
    """A class's captures differ by a few tokens: a given-back buffer of a near size (its size
    class, or up to twice it) is reused; a far smaller request does not take a huge buffer."""
    pool = BufferPool(pin=False)

    class Owner:
        pass

    def hold(tokens: int) -> Owner:
        owner = Owner()
        t, raw = pool.take((tokens, 576), torch.bfloat16)         # one residual layer of SmolLM2
        pool.lease(owner, [raw])
        return owner

    first = hold(300)
    del first
    gc.collect()
    second = hold(296)                                            # same class
    assert (pool.stats.allocations, pool.stats.reuses) == (1, 1)
    del second
    gc.collect()
    short = hold(140)                                             # under half as long: not this buffer...
    assert (pool.stats.allocations, pool.stats.reuses) == (2, 1)
    longer = hold(180)                                            # ...which serves one over half as long
    assert (pool.stats.allocations, pool.stats.reuses) == (2, 2) and short and longer


def test_pool_never_hands_out_a_buffer_something_still_reads():
    """Drift keeps a capture's residual after the capture is gone: its data must stay intact."""
    pool = BufferPool(pin=False)

    class Owner:
        pass
    owner = Owner()
    kept, raw = pool.take((4,), torch.float32)
    kept.copy_(torch.arange(4.0))
    pool.lease(owner, [raw])
    del owner, raw
    gc.collect()
    other, _ = pool.take((4,), torch.float32)                    # `kept` still views the first buffer
    other.fill_(-1)
    assert torch.equal(kept, torch.arange(4.0)) and pool.stats.allocations == 2
    del kept, other
    gc.collect()
    again, _ = pool.take((4,), torch.float32)                    # now nothing views it: reused
    assert pool.stats.allocations == 2 and pool.stats.reuses == 1


def test_held_capture_then_next_capture_allocates_nothing_new_after_release():
    """As the page holds them: capture n is held while capture n+1 runs; from the third capture
    on, every host buffer comes back from the pool."""
    model = tiny_model("llama", attn_implementation="sdpa")
    pool = BufferPool(pin=False)
    ids = torch.randint(3, 256, (1, 30))

    def one_capture():
        offload = Offloader(pool=pool)
        store, _ = record_attention(model, ids, offload=offload)
        offload.lease(store)
        return store

    reference = layer_probabilities(one_capture(), 1)
    gc.collect()
    held = one_capture()
    held = one_capture()                         # two captures' buffers are alive at once, then no more
    gc.collect()
    allocated = pool.stats.allocations
    assert allocated == 2 * 6                    # 3 layers × (Q, K)
    for _ in range(4):
        nxt = one_capture()                      # `held` is alive while this one runs
        held = nxt                               # the page replaces it: the old one is collected
        gc.collect()
        assert torch.allclose(layer_probabilities(held, 1), reference, atol=1e-6)
    assert pool.stats.allocations == allocated and pool.stats.reuses >= 4 * 6


# ---------------------------------------------------------------------------- tiled maths

def _exact_summaries(store, layer):
    prep = layer_rows(store, layer)
    return blockwise_summaries(prep)


@pytest.mark.parametrize("family", ["llama", "gemma2", "phi3", "gpt2"])
def test_online_summaries_equal_exact_ones(family):
    torch.manual_seed(3)
    model = tiny_model(family)
    store, _ = record_attention(model, torch.randint(3, 256, (1, 45)))
    for layer in store.layer_indices:
        prep = layer_rows(store, layer)
        tiled = online_summaries(prep, block_elements=4 * 5 * 7, key_tile=7)     # 5 rows × 7 keys a tile
        assert (tiled - _exact_summaries(store, layer)).abs().max() < TOL


def test_online_summaries_with_padding_mask():
    torch.manual_seed(4)
    model = tiny_model("mistral")
    ids = torch.randint(3, 256, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :9] = 0
    store, _ = record_attention(model, ids, mask)
    for layer in store.layer_indices:
        prep = layer_rows(store, layer, batch=1)
        tiled = online_summaries(prep, block_elements=4 * 4 * 6, key_tile=6)
        exact = blockwise_summaries(prep)
        assert (tiled[:, :, 9:] - exact[:, :, 9:]).abs().max() < TOL     # real tokens' rows


def test_embedded_model_online_summaries_equal_exact(embedded_nf4):
    ids = torch.randint(3, 1000, (200,), generator=torch.Generator().manual_seed(5))
    cap = capture(embedded_nf4.model, None, ids, CaptureOptions(parts=frozenset({"attention"}), layers=[0, 15, 29]))
    for layer in cap.attention_layers:
        prep = layer_rows(cap.attention, layer)
        tiled = online_summaries(prep, block_elements=9 * 32 * 64, key_tile=64)
        exact = blockwise_summaries(prep)
        assert (tiled - exact).abs().max() < 1e-4 * max(1.0, float(exact.abs().max()))


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_pooled_map_equals_pooling_the_exact_map(family):
    torch.manual_seed(6)
    model = tiny_model(family)
    t = 50
    store, _ = record_attention(model, torch.randint(3, 256, (1, t)))
    for layer, head in ((0, 1), (1, 3)):
        full = probabilities(store, layer, head)                                   # (T, T)
        pmap, factor = pooled(store, layer, head, max_size=12, block_elements=4 * t)
        n = math.ceil(t / factor)
        padded = torch.nn.functional.pad(full, (0, n * factor - t, 0, n * factor - t))
        sums = padded.view(n, factor, n, factor).sum((1, 3))
        counts = torch.tensor([min(factor, t - i * factor) for i in range(n)], dtype=torch.float32)
        assert pmap.shape == (n, n) and (pmap - sums / counts[:, None]).abs().max() < TOL


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_window_equals_a_slice_of_the_exact_map(family):
    torch.manual_seed(7)
    model = tiny_model(family)
    store, _ = record_attention(model, torch.randint(3, 256, (1, 60)))
    full = probabilities(store, 2, 1)
    part = window(store, 2, 1, (17, 45), (5, 40), block_elements=64)
    assert part.shape == (28, 35) and (part - full[17:45, 5:40]).abs().max() < TOL


def test_the_mask_rule_is_the_one_place_both_sides_read(monkeypatch):
    """Recording (softcapped eager blocks) and recomputation both ask mask_rule: changing the
    rule changes both."""
    torch.manual_seed(8)
    model = tiny_model("llama")
    store, _ = record_attention(model, torch.randint(3, 256, (1, 12)))
    q = torch.randn(1, 2, 12, 8)
    k = torch.randn(1, 2, 12, 8)
    v = torch.eye(12)[None, None, :, :8].expand(1, 2, 12, 8).contiguous()
    causal = blockwise_eager_attention(None, q, k, v, None, 0.3, None)
    causal_map = probabilities(store, 0, 0)
    assert causal_map[0, 1:].abs().max() == 0
    monkeypatch.setattr(mask_rule, "allowed_keys", lambda q_pos, k_pos, causal, window: None)
    assert not torch.allclose(blockwise_eager_attention(None, q, k, v, None, 0.3, None), causal)
    assert probabilities(store, 0, 0)[0, 1:].abs().max() > 0
