"""Anatomy is found by structure on every tiny family, on the meta device too, and says what is missing."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from explorer.model.anatomy import find_anatomy, is_norm_module, resolve
from tests.tiny_models import FAMILIES, tiny_config, tiny_model


@pytest.fixture(scope="module")
def models():
    return {f: tiny_model(f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_parts_found_and_resolve(models, family):
    model = models[family]
    a = find_anatomy(model)
    assert a.missing == []
    assert len(a.layers) == model.config.num_hidden_layers
    assert resolve(model, a.embed_tokens) is model.get_input_embeddings()
    assert resolve(model, a.lm_head) is model.get_output_embeddings()
    layer_list = resolve(model, a.layers_path)
    assert isinstance(layer_list, nn.ModuleList)
    for lp in a.layers:
        assert resolve(model, lp.name) is layer_list[lp.index]
        attn, mlp = resolve(model, lp.attention), resolve(model, lp.mlp)
        assert attn is not None and mlp is not None and attn is not mlp
        # The attention module is the one holding the query projection (fused or not).
        assert any(n in dict(attn.named_modules()) for n in ("q_proj", "qkv_proj", "c_attn"))
        assert len(lp.norms) >= 2
        for name in lp.norms:
            norm = resolve(model, name)
            assert is_norm_module(norm) and norm.weight.shape == (model.config.hidden_size,)
    final = resolve(model, a.final_norm)
    assert is_norm_module(final) and a.final_norm not in {n for lp in a.layers for n in lp.norms}
    expected_norms = 4 if family == "gemma2" else 2
    assert all(len(lp.norms) == expected_norms for lp in a.layers)


def test_position_embeddings_only_where_learned(models):
    for family, model in models.items():
        a = find_anatomy(model)
        if family == "gpt2":
            assert resolve(model, a.embed_positions) is model.transformer.wpe
        else:
            assert a.embed_positions is None


@pytest.mark.parametrize("family", FAMILIES)
def test_meta_device_gives_same_anatomy(models, family):
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(tiny_config(family))
    assert next(meta.parameters()).is_meta
    assert find_anatomy(meta) == find_anatomy(models[family])


class OddBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.mix = nn.Linear(d, d)
        self.scale = nn.LayerNorm(d)

    def forward(self, x):
        return x + self.mix(self.scale(x))


class OddModel(nn.Module):
    """No attention, no get_output_embeddings: what a model outside the usual pattern looks like."""

    def __init__(self, vocab: int = 50, d: int = 16, n: int = 3):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(OddBlock(d) for _ in range(n))
        self.out = nn.Linear(d, vocab)

    def forward(self, input_ids, **kwargs):
        x = self.tok(input_ids)
        for b in self.blocks:
            x = b(x)
        return self.out(x)


def test_unmappable_model_names_what_is_missing():
    a = find_anatomy(OddModel())
    assert a.layers_path == "blocks" and len(a.layers) == 3
    assert a.embed_tokens == "tok"
    text = " ".join(a.missing)
    assert "attention" in text and "LM head" in text and "final normalisation" in text
    assert a.layers[0].norms == ["blocks.0.scale"]
