"""What a capture records and what it returns: CaptureOptions in, Capture out. Plain data only.

Why plain: a Capture lives in a Streamlit session and in files. It holds tensors on CPU, strings
and numbers; no module, no tokenizer, no callable. So a capture kept in a session never pins a
model that has been unloaded. What needs the model (the logit lens, decoding new token ids)
receives it from the caller: see explorer.analyse.lens and explorer.analyse.attention.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from explorer.model.anatomy import Anatomy
from explorer.record.attention_store import AttentionStore
from explorer.record.components import Components

PARTS: frozenset[str] = frozenset({"embeddings", "residual", "norms", "block_norms", "attention", "logits",
                                   "components"})
DEFAULT_PARTS: frozenset[str] = PARTS - {"components"}
"""`components` (opt-in): each head's and MLP's share of the residual stream (record/components.py)."""
"""What a capture can record. `block_norms` = norms of the attention and MLP outputs."""


class PromptTooLongError(ValueError):
    """The prompt has more tokens than the model's context window."""


@dataclass
class CaptureOptions:
    """What to record and how much memory it may take. Every knob of capture() is here."""
    parts: frozenset[str] = DEFAULT_PARTS
    """Subset of PARTS; leave out what a view does not need (e.g. {"residual"} for a lens)."""
    layers: Sequence[int] | None = None
    """Decoder layers whose residual stream and attention are kept (None = all). Norm and
    block-norm statistics are per token and always kept for every layer."""
    memory_budget_bytes: int | None = None
    """Cap on what the capture stores; over it, residuals and attention keep evenly spaced layers
    only and a note says so. None = half of what is free where the tensors will live."""
    offload_to_cpu: bool = True
    """On GPUs, copy recorded tensors to CPU as the forward goes (asynchronously, into reused
    pinned buffers), except the attention Q/K of the layers that fit `gpu_budget_bytes`; False
    keeps everything on the device within memory_budget_bytes."""
    gpu_budget_bytes: int | None = None
    """Attention Q/K kept on the GPU, layer by layer while they fit: None = 90% of the GPU memory
    left free after the forward's estimated peak (explorer/record/placement.py); 0 = none."""
    components_on_device: bool | None = None
    """Part "components" on a GPU: keep its activations there until an analysis reads them
    (True), copy them to the host as the forward goes (False), or None: on the GPU when they take
    at most half of its free memory (a host copy doubles the capture's time, see
    explorer/record/components_recorder.py)."""
    add_generation_prompt: bool = True
    """Chat messages: end with the assistant's turn header."""
    add_special_tokens: bool = True
    """Plain prompts: let the tokenizer add BOS etc."""
    residual_dtype: torch.dtype | None = None
    """Dtype of the kept residual stream; None = the dtype the model computes in."""
    model_name: str | None = None
    """Shown in summaries; None = the config's name or path."""
    precision: str | None = None
    """How the weights were loaded ("nf4", "bf16", ...), kept with the capture; None = unknown."""
    top_logits: int = 20
    """Decoded strings of this many top next tokens are kept (the capture keeps no tokenizer)."""

    def __post_init__(self) -> None:
        unknown = set(self.parts) - PARTS
        if unknown:
            raise ValueError(f"unknown capture parts {sorted(unknown)}; choose from {sorted(PARTS)}")
        self.parts = frozenset(self.parts) | ({"attention"} if "components" in self.parts else set())


@dataclass
class NormStats:
    """One normalisation module's view of each token."""
    input_rms: torch.Tensor      # (T,) root mean square of the input over the hidden dimension
    output_mean: torch.Tensor    # (T,) mean of the output over the hidden dimension
    output_std: torch.Tensor     # (T,) standard deviation of the output over the hidden dimension
    weight: torch.Tensor | None  # (d,) float32, the learned per-channel scale as stored


@dataclass
class Capture:
    """Everything one prompt's forward pass showed, on CPU, except the attention Q/K of the layers
    that fit the GPU's budget (`attention_placement()` says which are where, and which were
    dropped and why; saving a file moves them to the host).

    Layer-indexed tensors follow the model's decoder layers; `residual_layers` says which layers
    the residual stream kept (all, unless a layer selection or the memory budget reduced them).
    """
    model_name: str
    token_ids: torch.Tensor                  # (T,) int64
    tokens: list[str]                        # the tokenizer's own token strings (e.g. "Ġthe")
    token_texts: list[str]                   # each token decoded on its own (e.g. " the")
    embeddings: torch.Tensor | None          # (T, d) residual stream entering layer 0 (after any
                                             # position embedding or scaling the model applies)
    residual: torch.Tensor | None            # (len(residual_layers), T, d) output of each kept layer
    residual_layers: list[int]
    norms: dict[str, NormStats]              # qualified module name -> stats, in forward order
    attn_out_norm: torch.Tensor | None       # (L, T) L2 norm of each layer's attention output
    mlp_out_norm: torch.Tensor | None        # (L, T) L2 norm of each layer's MLP output
    last_logits: torch.Tensor | None         # (V,) float32, the model's logits at the last position
    attention: AttentionStore | None         # Q/K per kept layer; probabilities via analyse.attention
    num_layers: int
    num_heads: int
    num_kv_heads: int
    hidden_size: int
    kv_head_of: list[int]                    # (H,) query head h reads KV head kv_head_of[h]
    anatomy: Anatomy
    notes: list[str] = field(default_factory=list)   # what was missing or reduced, in words
    precision: str | None = None             # the weights' precision ("nf4", "bf16", ...); None = unknown
    components: Components | None = None     # per-head / MLP decomposition (part "components")
    vocab: dict[int, str] = field(default_factory=dict)  # decoded strings of ids capture() saw (top logits)
    # What analysis derives afterwards (lens, head summaries, more token texts) is kept beside the
    # capture, in explorer.analyse.derived.Derived: nothing writes into a Capture once capture() returned.

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def attention_layers(self) -> list[int]:
        return self.attention.layer_indices if self.attention is not None else []

    def attention_placement(self) -> str:
        """Which layers' attention is on the GPU, in host memory, or dropped and why: one sentence
        for the page, the CLI and `show` (AttentionStore.placement holds it per layer)."""
        if self.attention is None:
            return "attention: not recorded" + ("" if not self.notes else " (see the notes)")
        return self.attention.placement_summary()

    def kv_groups(self) -> list[list[int]]:
        """For each KV head, the query heads that share it."""
        return [[h for h, g in enumerate(self.kv_head_of) if g == kv] for kv in range(self.num_kv_heads)]

    def token_text(self, token_id: int) -> str:
        """The decoded string of an id this capture has seen, else "<id>"."""
        return self.vocab.get(int(token_id), f"<{int(token_id)}>")


__all__ = ["PARTS", "Capture", "CaptureOptions", "NormStats", "PromptTooLongError"]
