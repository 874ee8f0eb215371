"""Tiny random models of several families, built offline from config classes.

They are the default fixture: each family exercises a different layout (fused qkv in Phi-3,
softcapping and sliding windows in Gemma-2, Conv1D and absolute positions in GPT-2), so a code
path that only works for Llama shows up here rather than on a user's model.
"""
from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
)

FAMILIES = ("llama", "mistral", "qwen2", "phi3", "gemma2", "gpt2")

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def tiny_config(family: str) -> PretrainedConfig:
    if family == "llama":
        return LlamaConfig(**_COMMON, tie_word_embeddings=False)
    if family == "mistral":
        return MistralConfig(**_COMMON, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**_COMMON)
    if family == "phi3":
        return Phi3Config(**_COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gemma2":
        return Gemma2Config(**_COMMON, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    if family == "gpt2":
        return GPT2Config(vocab_size=256, n_embd=64, n_layer=3, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2)
    raise ValueError(f"unknown family {family!r}")


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32,
               attn_implementation: str | None = None) -> torch.nn.Module:
    """attn_implementation=None keeps each family's own default (Gemma-2 has no SDPA path)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=dtype,
                                             attn_implementation=attn_implementation)
    return model.eval()


def save_tiny_folder(family: str, folder, tokenizer, seed: int = 0, safe_serialization: bool = True):
    """A tiny model saved with a real tokenizer, so the loader and generation run end to end.

    The vocabulary is widened to the tokenizer's, so every id it produces has an embedding row.
    """
    config = tiny_config(family)
    config.vocab_size = len(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if safe_serialization:
        model.save_pretrained(folder)
    else:  # transformers 5 always writes safetensors; write the legacy pickle layout by hand
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), f"{folder}/pytorch_model.bin")
    tokenizer.save_pretrained(folder)
    return folder


def with_random_biases(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Random init leaves biases at zero; give them values so a test can see where they go."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model
