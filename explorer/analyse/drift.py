"""Where quantization changes the computation: one model in two precisions, on the same tokens.

Why fingerprints: the two precisions are never resident together (that is the point of
quantizing), so the reference run leaves behind what the comparison needs — next-token logits at
every position, every layer's residual stream and the attention's Q/K — on CPU, and each later
precision is compared against it and then dropped. Everything is compared in float32.

Measures, each against the reference (the highest precision that loaded):
  - next-token KL(P_ref ‖ P_cand) in nats and top-1 agreement, at every prompt position;
  - per layer, the cosine similarity and relative error ‖a − b‖ / ‖a‖ of the residual stream,
    averaged over positions: the layer where they move is where the drift enters;
  - per (layer, head), the mean total-variation distance ½·Σⱼ|P_ref − P_cand| between attention
    rows (0 = same distribution, 1 = disjoint), recomputed block by block from the stored Q/K so
    no layers × heads × T² tensor exists at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from explorer.analyse.attention import block_probs
from explorer.analyse.lens import LensHead
from explorer.model.limits import BLOCK_ELEMENTS
from explorer.record.attention_store import AttentionStore
from explorer.record.capture import CaptureOptions, capture
from explorer.record.capture_data import Capture
from explorer.record.token_text import token_text

# fp32 > bf16 > fp16 > int8 > nf4 ≈ fp4: the reference is the first of these that loads.
PRECISION_RANK: dict[str, int] = {"fp32": 5, "bf16": 4, "fp16": 3, "int8": 2, "nf4": 1, "fp4": 0}

_EPS = 1e-12


def by_rank(precisions: list[str]) -> list[str]:
    """Highest precision first (duplicates dropped); the first that loads becomes the reference."""
    seen: list[str] = []
    for p in precisions:
        if p not in seen:
            seen.append(p)
    return sorted(seen, key=lambda p: -PRECISION_RANK.get(p, -1))


# --------------------------------------------------------------------------------------------
# What one precision computed
# --------------------------------------------------------------------------------------------

@dataclass
class Fingerprint:
    """One precision's forward pass over one prompt, on CPU, independent of the model."""
    prompt: str
    token_ids: torch.Tensor              # (T,) int64
    tokens: list[str]                    # each token decoded on its own, for chart labels
    logits: torch.Tensor                 # (T, V) float32 next-token logits at every position
    residual: torch.Tensor | None        # (len(layers), T, d) output of each kept decoder layer
    layers: list[int]
    attention: AttentionStore | None     # Q/K per layer, probabilities on demand
    notes: list[str] = field(default_factory=list)


def _full_logits(cap: Capture, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(T, V) float32. The model's own final norm and head over the last layer's residual when the
    capture kept it (no second forward); a plain forward otherwise."""
    last = cap.num_layers - 1
    head = LensHead.from_model(model) if cap.residual is not None and last in cap.residual_layers else None
    if head is not None:
        hidden = cap.residual[cap.residual_layers.index(last)]                  # (T, d)
        probe = head.logits(hidden[:1])                                          # (1, V)
        rows = max(1, BLOCK_ELEMENTS // probe.shape[-1])
        return torch.cat([head.logits(hidden[r:r + rows]).cpu() for r in range(0, hidden.shape[0], rows)])
    device = model.get_input_embeddings().weight.device
    with torch.inference_mode():
        out = model(input_ids=ids[None].to(device), use_cache=False)
    return out.logits[0].float().cpu()


def fingerprint(model: nn.Module, tokenizer, token_ids: torch.Tensor, prompt: str = "",
                attention: bool = True) -> Fingerprint:
    """Run `token_ids` (T,) once through `model` and keep what drift needs.

    The ids, not the text, are the input, so every precision sees exactly the same tokens.
    """
    parts = {"residual", "attention"} if attention else {"residual"}
    try:
        cap = capture(model, tokenizer, token_ids, CaptureOptions(parts=frozenset(parts)))
    except (torch.OutOfMemoryError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a model the capture cannot hook still gets KL and top-1
        return _plain_fingerprint(model, tokenizer, token_ids, prompt,
                                  f"capture failed ({type(exc).__name__}: {str(exc)[:200]}); residuals come "
                                  "from output_hidden_states and there is no attention difference")
    logits = _full_logits(cap, model, cap.token_ids)
    notes = list(cap.notes)
    store = cap.attention if attention else None
    if attention and store is None:
        notes.append("attention was not recorded for this model, so no per-head difference")
    return Fingerprint(prompt=prompt, token_ids=cap.token_ids, tokens=list(cap.token_texts), logits=logits,
                       residual=cap.residual, layers=list(cap.residual_layers), attention=store, notes=notes)


def _plain_fingerprint(model: nn.Module, tokenizer, token_ids: torch.Tensor, prompt: str, note: str) -> Fingerprint:
    """Fallback without hooks: logits and hidden states from one ordinary forward.

    Both runs of a comparison take the same path, so their numbers stay comparable; the last
    hidden state may already be normed, depending on the model's code, as the note says.
    """
    ids = token_ids.reshape(-1).to(torch.long).cpu()                             # (T,)
    device = model.get_input_embeddings().weight.device
    with torch.inference_mode():
        out = model(input_ids=ids[None].to(device), use_cache=False, output_hidden_states=True)
    hidden = getattr(out, "hidden_states", None)
    residual = torch.stack([h[0].cpu() for h in hidden[1:]]) if hidden else None  # (L, T, d)
    tokens = [token_text(tokenizer, i) for i in ids.tolist()] if tokenizer is not None else [str(i) for i in ids.tolist()]
    return Fingerprint(prompt=prompt, token_ids=ids, tokens=tokens, logits=out.logits[0].float().cpu(),
                       residual=residual, layers=list(range(residual.shape[0])) if residual is not None else [],
                       attention=None, notes=[note])


# --------------------------------------------------------------------------------------------
# Measures on tensors
# --------------------------------------------------------------------------------------------

def next_token_kl(ref_logits: torch.Tensor, cand_logits: torch.Tensor) -> torch.Tensor:
    """(T, V), (T, V) -> (T,) KL(P_ref ‖ P_cand) in nats, float32; exactly 0 for equal logits."""
    log_p = torch.log_softmax(ref_logits.float(), dim=-1)
    log_q = torch.log_softmax(cand_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)


def top1_agreement(ref_logits: torch.Tensor, cand_logits: torch.Tensor) -> torch.Tensor:
    """(T, V), (T, V) -> (T,) bool: does the candidate's most likely next token match the reference's."""
    return ref_logits.argmax(-1) == cand_logits.argmax(-1)


def residual_drift(ref: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, T, d), (L, T, d) -> cosine (L, T) and relative error (L, T), per layer and position."""
    a, b = ref.float(), cand.float()
    cos = nn.functional.cosine_similarity(a, b, dim=-1, eps=_EPS)
    rel = torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(a, dim=-1).clamp_min(_EPS)
    return cos, rel


def attention_difference(ref: AttentionStore, cand: AttentionStore,
                         layers: list[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """Mean total-variation distance per (layer, head) between two runs' attention rows.

    Returns (layers, (L, H) float32). Each block holds heads × rows × keys probabilities of both
    runs, sized by the store's block budget.
    """
    layers = [l for l in (layers if layers is not None else ref.layer_indices) if l in cand.layers]
    heads = list(range(ref.num_heads))
    out = torch.zeros(len(layers), ref.num_heads)
    for li, layer in enumerate(layers):
        t_q, t_k = ref.sizes(layer)
        rows = max(1, BLOCK_ELEMENTS // max(1, ref.num_heads * t_k))
        total = torch.zeros(ref.num_heads)
        for r0 in range(0, t_q, rows):
            r1 = min(t_q, r0 + rows)
            p, n_p = block_probs(ref, layer, heads, r0, r1)                     # (H, b, n_p)
            q, n_q = block_probs(cand, layer, heads, r0, r1)                    # (H, b, n_q)
            n = max(n_p, n_q)
            p = nn.functional.pad(p, (0, n - n_p))
            q = nn.functional.pad(q.to(p.device), (0, n - n_q))
            total += (0.5 * (p - q).abs().sum(-1)).sum(-1).float().cpu()         # (H,)
        out[li] = total / t_q
    return layers, out


# --------------------------------------------------------------------------------------------
# One precision against the reference, over a set of prompts
# --------------------------------------------------------------------------------------------

@dataclass
class PromptDrift:
    """Per-position view of one prompt, for the "where in the prompt" chart."""
    prompt: str
    tokens: list[str]
    kl: list[float]                      # (T,) nats
    top1: list[bool]                     # (T,)


@dataclass
class DriftResult:
    """One precision against the reference, aggregated over every position of every prompt."""
    reference: str                       # reference precision
    candidate: str                       # this run's precision
    positions: int                       # positions compared, all prompts together
    kl_mean: float                       # nats
    kl_max: float
    top1_agreement: float                # fraction of positions, 0..1
    layers: list[int]                    # decoder layers of the per-layer lists
    residual_cosine: list[float]         # (L,) mean over positions
    residual_rel_error: list[float]      # (L,) mean over positions
    attention_layers: list[int] = field(default_factory=list)
    attention_diff: list[list[float]] = field(default_factory=list)   # (L, H) mean total variation
    prompts: list[PromptDrift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def largest_jump_layer(self) -> int | None:
        """The layer whose residual relative error grows the most over the layer before (0 before the
        first): where most of the drift enters, as one number for a table."""
        if not self.residual_rel_error:
            return None
        rel = [0.0] + list(self.residual_rel_error)
        jumps = [rel[i + 1] - rel[i] for i in range(len(self.residual_rel_error))]
        return self.layers[max(range(len(jumps)), key=jumps.__getitem__)]


def compare_fingerprints(reference: list[Fingerprint], candidate: list[Fingerprint], ref_precision: str,
                         cand_precision: str) -> DriftResult:
    """Drift of `candidate` against `reference`, prompt by prompt (same prompts, same order)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference prompts but {len(candidate)} candidate prompts")
    kl_all: list[torch.Tensor] = []
    agree_all: list[torch.Tensor] = []
    prompts: list[PromptDrift] = []
    notes: list[str] = []
    layers = sorted(set(reference[0].layers).intersection(*(set(f.layers) for f in reference + candidate)))
    cos_sum = torch.zeros(len(layers), dtype=torch.float64)
    rel_sum = torch.zeros(len(layers), dtype=torch.float64)
    att_layers: list[int] = []
    att_sum: torch.Tensor | None = None
    positions = 0
    for ref, cand in zip(reference, candidate):
        if not torch.equal(ref.token_ids, cand.token_ids):
            raise ValueError("the two runs tokenized the prompt differently, so they cannot be compared")
        if ref.logits.shape != cand.logits.shape:
            raise ValueError(f"logits shapes differ: {tuple(ref.logits.shape)} vs {tuple(cand.logits.shape)}")
        t = int(ref.token_ids.shape[0])
        kl = next_token_kl(ref.logits, cand.logits)                               # (T,)
        agree = top1_agreement(ref.logits, cand.logits)                           # (T,)
        kl_all.append(kl)
        agree_all.append(agree)
        prompts.append(PromptDrift(ref.prompt, ref.tokens, kl.tolist(), agree.tolist()))
        if layers and ref.residual is not None and cand.residual is not None:
            ri = [ref.layers.index(l) for l in layers]
            ci = [cand.layers.index(l) for l in layers]
            cos, rel = residual_drift(ref.residual[ri], cand.residual[ci])        # (L, T) each
            cos_sum += cos.double().sum(-1)
            rel_sum += rel.double().sum(-1)
        if ref.attention is not None and cand.attention is not None:
            la, diff = attention_difference(ref.attention, cand.attention)        # (L, H)
            if att_sum is None:
                att_layers, att_sum = la, diff.double() * t
            elif la == att_layers:
                att_sum += diff.double() * t
        positions += t
        notes.extend(n for n in cand.notes if n not in notes)
    kl_cat = torch.cat(kl_all)
    agree_cat = torch.cat(agree_all)
    return DriftResult(
        reference=ref_precision, candidate=cand_precision, positions=positions,
        kl_mean=float(kl_cat.mean()), kl_max=float(kl_cat.max()),
        top1_agreement=float(agree_cat.float().mean()), layers=layers,
        residual_cosine=(cos_sum / positions).tolist(), residual_rel_error=(rel_sum / positions).tolist(),
        attention_layers=att_layers,
        attention_diff=(att_sum / positions).tolist() if att_sum is not None else [],
        prompts=prompts, notes=notes)


__all__ = ["PRECISION_RANK", "DriftResult", "Fingerprint", "PromptDrift", "attention_difference", "by_rank",
           "compare_fingerprints", "fingerprint", "next_token_kl", "residual_drift", "top1_agreement"]
