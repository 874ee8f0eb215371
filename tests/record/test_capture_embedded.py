"""capture() on the embedded SmolLM2: 4-bit NF4 on CPU, chat messages, and eager equality in fp32."""
from __future__ import annotations

import pytest
import torch

from explorer.analyse.attention import attention_map, attention_map_pooled, capture_head_summaries
from explorer.analyse.lens import LensHead, logit_lens
from explorer.record.capture import capture

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name the capital of France in one word."}]


def test_nf4_chat_capture(embedded_nf4):
    model, tok = embedded_nf4.model, embedded_nf4.tokenizer
    impl = model.config._attn_implementation
    cap = capture(model, tok, MESSAGES)
    assert cap.tokens[0] == "<|im_start|>" and cap.token_texts[-1].endswith("\n")
    assert cap.tokens == tok.convert_ids_to_tokens(cap.token_ids.tolist())
    t = cap.num_tokens
    assert cap.notes == []
    assert cap.residual.shape == (30, t, 576) and cap.num_heads == 9 and cap.num_kv_heads == 3
    assert len(cap.norms) == 61
    lens = logit_lens(cap, LensHead.from_model(model), k=1, layers=[29], positions=[-1])
    assert int(lens.token_ids[0, 0, 0]) == int(cap.last_logits.argmax())
    p = attention_map(cap, 15, 4)
    assert p.shape == (t, t) and torch.allclose(p.sum(-1), torch.ones(t), atol=1e-4)
    assert torch.all(p.triu(1) == 0)
    s = capture_head_summaries(cap)
    assert s.entropy.shape == (30, 9, t) and torch.all(s.entropy >= -1e-6)
    pooled, factor = attention_map_pooled(cap, 15, 4, max_size=8)
    assert pooled.shape[0] <= 8 and factor > 1
    assert model.config._attn_implementation == impl


def test_fp32_matches_eager(embedded_fp32):
    model, tok = embedded_fp32.model, embedded_fp32.tokenizer
    ids = torch.tensor(tok("Attention is all you need, they said, and then they measured it.")["input_ids"])
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = model(input_ids=ids[None], output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(impl)
    cap = capture(model, tok, ids)
    for layer in range(30):
        ours = torch.stack([attention_map(cap, layer, h) for h in range(9)])
        assert (ours - ref.attentions[layer][0]).abs().max() < 1e-4, layer
    assert torch.allclose(cap.last_logits, ref.logits[0, -1], atol=1e-3)
