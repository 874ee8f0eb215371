"""Step 1 of capture(): what one capture will record, decided before anything runs.

Why a module of its own: planning reads only the prompt, the config and the memory budgets (tokens,
the model's shape, which layers' residuals and Q/K fit where); running the forward with hooks and
assembling the Capture are explorer/record/capture.py. Nothing here touches an activation.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from explorer.model.anatomy import Anatomy, find_anatomy
from explorer.model.loading import context_length
from explorer.record.attention_store import Placement
from explorer.record.capture_data import CaptureOptions, PromptTooLongError
from explorer.record.placement import Budgets, default_budget, forward_peak_bytes, gpu_budget, place_layers, plan_layers
from explorer.record.prompt_checks import check_ids, check_messages, check_text, vocab_size

Prompt = str | Sequence[dict] | Sequence[int] | torch.Tensor


# --------------------------------------------------------------------------------------------
# Inputs and the model's shape
# --------------------------------------------------------------------------------------------

def tokenize(tokenizer, prompt: Prompt, options: CaptureOptions) -> torch.Tensor:
    """(T,) int64 ids for a plain prompt, chat messages, or ids given directly."""
    if isinstance(prompt, torch.Tensor):
        return prompt.reshape(-1).to(torch.long).cpu()
    if isinstance(prompt, str):
        check_text(prompt)
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer")
        return torch.tensor(tokenizer(prompt, add_special_tokens=options.add_special_tokens)["input_ids"],
                            dtype=torch.long)
    items = list(prompt)
    if items and isinstance(items[0], dict):
        check_messages(items)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat messages need a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(items, tokenize=False,
                                             add_generation_prompt=options.add_generation_prompt)
        return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    return torch.tensor([int(i) for i in items], dtype=torch.long)


_ANATOMY_CACHE: weakref.WeakKeyDictionary[nn.Module, Anatomy] = weakref.WeakKeyDictionary()


def anatomy_of(model: nn.Module) -> Anatomy:
    """find_anatomy, remembered per model object (inspection walks every module)."""
    found = _ANATOMY_CACHE.get(model)
    if found is None:
        found = _ANATOMY_CACHE[model] = find_anatomy(model)
    return found


@dataclass(frozen=True)
class ModelShape:
    """The sizes a capture needs, from the config, with the layer count from the anatomy."""
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int


def model_shape(model: nn.Module, anatomy: Anatomy) -> ModelShape:
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or (hidden // heads if heads else 0))
    return ModelShape(len(anatomy.layers), heads, kv, head_dim, hidden)


def _input_embedding_weight(model: nn.Module) -> torch.Tensor | None:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype activations flow in: the embedding weight's (quantized layers compute in it too)."""
    weight = _input_embedding_weight(model)
    if weight is not None and weight.is_floating_point():
        return weight.dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def input_device(model: nn.Module) -> torch.device:
    weight = _input_embedding_weight(model)
    return weight.device if weight is not None else next(model.parameters()).device


# --------------------------------------------------------------------------------------------
# Step 1: plan
# --------------------------------------------------------------------------------------------

@dataclass
class CapturePlan:
    """What one capture will record, decided before anything runs."""
    ids: torch.Tensor            # (T,) int64
    anatomy: Anatomy
    shape: ModelShape
    parts: frozenset[str]
    keep: list[int]              # layers whose residual stream is kept
    notes: list[str]
    budget: int = 0              # bytes the recorded tensors may take
    act_bytes: int = 2           # bytes per activation value
    placement: dict[int, Placement] = field(default_factory=dict)   # attention Q/K of each asked-for layer

    @property
    def attention_layers(self) -> list[int]:
        """Layers whose Q/K are recorded (on the GPU or the host)."""
        return [layer for layer, p in self.placement.items() if p.where != "dropped"]


def plan_capture(model: nn.Module, tokenizer, prompt: Prompt, options: CaptureOptions) -> CapturePlan:
    """Tokenize, check the context window, and choose the layers that fit the memory budget."""
    anatomy = anatomy_of(model)
    shape = model_shape(model, anatomy)
    ids = check_ids(tokenize(tokenizer, prompt, options), vocab_size(model))
    t = int(ids.shape[0])
    if t == 0:
        raise ValueError("the prompt is empty after tokenization")
    config = getattr(model, "config", None)
    ctx = context_length(config) if config is not None else None
    if ctx is not None and t > ctx:
        raise PromptTooLongError(f"the prompt has {t} tokens but the model's context window is {ctx} tokens; "
                                 f"shorten it by {t - ctx} tokens")
    dtype = _model_dtype(model)
    act_bytes = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    res_bytes = torch.finfo(options.residual_dtype or dtype).bits // 8
    residual_per_layer = t * shape.hidden * res_bytes if "residual" in options.parts else 0
    device = input_device(model)
    budget = (options.memory_budget_bytes if options.memory_budget_bytes is not None
              else default_budget(device, options.offload_to_cpu))
    keep, note = plan_layers(shape.layers, options.layers, residual_per_layer, budget)
    notes = [f"not found: {m}" for m in anatomy.missing] + ([note] if note else [])
    placement: dict[int, Placement] = {}
    if "attention" in options.parts:
        wanted = sorted(set(range(shape.layers) if options.layers is None
                            else (i % shape.layers for i in options.layers)))
        qk_per_layer = (shape.heads + shape.kv_heads) * t * shape.head_dim * act_bytes
        placement = place_layers(wanted, qk_per_layer, _budgets(model, device, t, act_bytes, options,
                                                                 budget - residual_per_layer * len(keep)))
    return CapturePlan(ids, anatomy, shape, options.parts, keep, notes, budget, act_bytes, placement)


def _budgets(model: nn.Module, device: torch.device, t: int, act_bytes: int, options: CaptureOptions,
             host_left: int) -> Budgets:
    """The GPU and host budgets for recorded Q/K. offload_to_cpu=False: everything on the device
    within the capture's budget (the old "keep on device" behaviour)."""
    if device.type == "cuda" and not options.offload_to_cpu:
        return Budgets(gpu=host_left, host=0)
    if options.gpu_budget_bytes is not None:
        gpu = options.gpu_budget_bytes if device.type == "cuda" else 0
    else:
        config = getattr(model, "config", None)
        gpu = gpu_budget(device, forward_peak_bytes(config, t, act_bytes) if config is not None else 0)
    return Budgets(gpu=gpu, host=host_left)


__all__ = ["CapturePlan", "ModelShape", "Prompt", "anatomy_of", "input_device", "model_shape", "plan_capture", "tokenize"]
