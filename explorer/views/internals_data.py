"""What the internals views read off a Capture: arrays sized for the screen, computed once.

Why a separate layer between Capture and figures: switching layer, head or token must not rerun
the model and should not recompute what an earlier switch already computed. A `Readout` wraps one
capture and memoises each derived array (LRU), so the page's fragment only pays for what changed.
Everything here is plain tensors/numpy and dataclasses; no Streamlit, no Plotly.

Screen budget: heatmaps keep at most MAX_SIDE cells a side (long prompts are block-pooled; a
window gives full resolution), and the logit lens, which writes a token in every cell, at most
LENS_MAX_POSITIONS positions.
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from explorer.record.capture import Capture
from explorer.analyse.lens import LensHead, LensResult
from explorer.analyse.pca import Projection, pca

MAX_SIDE = 512
OVERVIEW_TILE = 16
LENS_MAX_POSITIONS = 48
FILE_LENS_K = 5            # top-k kept in a saved file's logit lens
BLOCK_ELEMENTS = 1 << 24   # float32 elements per recomputation block (~64 MiB)

Span = tuple[int, int]     # [start, stop) token positions one heatmap cell covers


def block_spans(n: int, factor: int) -> list[Span]:
    """Cells of `factor` tokens over n positions; the last may be partial."""
    return [(s, min(n, s + factor)) for s in range(0, n, max(1, factor))]


def pool_factor(n: int, max_side: int = MAX_SIDE) -> int:
    return max(1, math.ceil(n / max(1, max_side)))


def pool_mean(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over blocks of `factor` along the last axis (the last block may be partial)."""
    if factor <= 1:
        return x
    n = x.shape[-1]
    cells = math.ceil(n / factor)
    padded = nn.functional.pad(x, (0, cells * factor - n))
    sums = padded.reshape(*x.shape[:-1], cells, factor).sum(-1)
    counts = torch.full((cells,), float(factor))
    counts[-1] = n - factor * (cells - 1)
    return sums / counts


def pool_sum(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum over blocks of `factor` along the last axis: keeps attention rows summing to 1."""
    if factor <= 1:
        return x
    n = x.shape[-1]
    cells = math.ceil(n / factor)
    return nn.functional.pad(x, (0, cells * factor - n)).reshape(*x.shape[:-1], cells, factor).sum(-1)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class AttentionView:
    """One head's map, full resolution, pooled, or a full-resolution window of it."""
    layer: int
    head: int
    kv_head: int
    z: np.ndarray            # (n_q, n_k) float32; row = query cell, column = key cell
    q_spans: list[Span]
    k_spans: list[Span]
    factor: int              # tokens per cell (1 = every token)
    window: bool             # True: a crop of the full map


@dataclass
class Overview:
    """Every (layer, head) map pooled to a small tile, for small multiples."""
    tiles: np.ndarray        # (L, H, n, n) float32
    layers: list[int]
    factor: int              # tokens per tile cell
    kv_head_of: list[int]


@dataclass
class TokenAttention:
    """Where one query token looks, layer by layer."""
    token: int
    head: int | None         # None: mean over the layer's heads
    z: np.ndarray            # (L, n_k) float32, each row sums to 1 (pooled by summing)
    layers: list[int]
    k_spans: list[Span]
    factor: int


@dataclass
class ResidualNorms:
    """L2 norm of the residual stream entering layer 0 and after each kept layer."""
    z: np.ndarray            # (R, n) float32
    row_names: list[str]     # "embeddings", "layer 0", ...
    row_layers: list[int]    # -1 for the embeddings
    spans: list[Span]
    factor: int


@dataclass
class NormRow:
    """One normalisation module, located by layer and role ("input_layernorm", "final norm")."""
    name: str
    layer: int               # decoder layer; num_layers for the final norm
    role: str
    input_rms: np.ndarray    # (T,) float32
    output_mean: np.ndarray  # (T,)
    output_std: np.ndarray   # (T,)
    weight: np.ndarray | None  # (d,) float32 learned gain


@dataclass
class LensWindow:
    """Top-k logit-lens tokens for every kept layer over a window of positions."""
    layers: list[int]
    positions: list[int]
    token_ids: np.ndarray    # (L, P, k) int64
    probs: np.ndarray        # (L, P, k) float32
    texts: list[list[list[str]]]   # [L][P][k] decoded token strings


@dataclass
class Trajectory:
    """How the final prediction at one position emerges across layers.

    exact=False: from a saved file without the model, where only the top-k per layer is known;
    rank is -1 (and prob NaN) where the prediction was outside that top-k.
    """
    position: int
    target_id: int
    target_text: str
    layers: list[int]
    prob: np.ndarray         # (L,) float32
    rank: np.ndarray         # (L,) int64, 0 = top token
    top_texts: list[str]     # each layer's own top token
    exact: bool
    k: int                   # top-k known per layer when not exact


# --------------------------------------------------------------------------------------------
# A float32 logit-lens head for CPU
# --------------------------------------------------------------------------------------------

_FP32_HEADS: "weakref.WeakKeyDictionary[nn.Module, LensHead]" = weakref.WeakKeyDictionary()
_FP32_LOCK = threading.Lock()


def cpu_float_lens_head(head: LensHead | None) -> LensHead | None:
    """A float32 copy of a bf16/fp16 LM head that lives on CPU, shared by all captures of a model.

    Why: CPU matmuls in bf16 are several times slower than in float32 (the lens multiplies every
    hidden state by the whole vocabulary). The copy holds no reference to the model, so a capture
    kept in a session does not keep an unloaded model's head alive. Heads on GPU, or quantized
    heads, are returned unchanged.
    """
    if head is None or not isinstance(head.lm_head, nn.Linear):
        return head
    weight = head.lm_head.weight
    if weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16):
        return head
    with _FP32_LOCK:
        cached = _FP32_HEADS.get(head.lm_head)
        if cached is None:
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=head.lm_head.bias is not None)
            with torch.no_grad():
                linear.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)
                if head.lm_head.bias is not None:
                    linear.bias = nn.Parameter(head.lm_head.bias.detach().float().clone(), requires_grad=False)
            norm = copy.deepcopy(head.final_norm).float() if head.final_norm is not None else None
            cached = LensHead(final_norm=norm, lm_head=linear, final_softcap=head.final_softcap)
            _FP32_HEADS[head.lm_head] = cached
    return cached


# --------------------------------------------------------------------------------------------
# Readout
# --------------------------------------------------------------------------------------------

class Readout:
    """Memoised, screen-sized views of one Capture. Safe to share between a script run and a
    download thread (the memo is locked; a value may rarely be computed twice)."""

    def __init__(self, capture: Capture, memo_size: int = 96, max_side: int = MAX_SIDE):
        self.capture = capture
        self.max_side = max_side
        capture.lens_head = cpu_float_lens_head(capture.lens_head)
        self._memo: OrderedDict[tuple, Any] = OrderedDict()
        self._memo_size = memo_size
        self._lock = threading.Lock()

    # ---- memo -----------------------------------------------------------------------------
    def _cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return value

    def is_cached(self, *key: Any) -> bool:
        return key in self._memo

    # ---- structure ------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return self.capture.num_tokens

    @property
    def texts(self) -> list[str]:
        return self.capture.token_texts

    @property
    def attention_layers(self) -> list[int]:
        return self.capture.attention_layers

    @property
    def residual_layers(self) -> list[int]:
        return self.capture.residual_layers

    @property
    def view_layers(self) -> list[int]:
        """Layers a layer picker offers: those with attention, else those with a residual stream."""
        return self.attention_layers or self.residual_layers or list(range(self.capture.num_layers))

    @property
    def has_attention(self) -> bool:
        return bool(self.attention_layers)

    @property
    def is_pooled(self) -> bool:
        return self.num_tokens > self.max_side

    # ---- attention ------------------------------------------------------------------------
    def attention_view(self, layer: int, head: int, q_window: Span | None = None,
                       k_window: Span | None = None) -> AttentionView:
        """The head's map: every token when the prompt fits MAX_SIDE, else pooled; a window
        (queries and keys, each at most MAX_SIDE wide) is always full resolution."""
        key = ("attention", layer, head, q_window, k_window)
        return self._cached(key, lambda: self._attention_view(layer, head, q_window, k_window))

    def _attention_view(self, layer: int, head: int, q_window: Span | None, k_window: Span | None) -> AttentionView:
        cap = self.capture
        t = self.num_tokens
        kv = cap.kv_head_of[head]
        if q_window is None and k_window is None:
            if t <= self.max_side:
                z = cap.attention_map(layer, head)                            # (T, T)
                spans = block_spans(t, 1)
                return AttentionView(layer, head, kv, z.numpy(), spans, spans, 1, False)
            pooled, factor = cap.attention_map_pooled(layer, head, self.max_side)
            spans = block_spans(t, factor)
            return AttentionView(layer, head, kv, pooled.numpy(), spans, spans, factor, False)
        q0, q1 = self._clip_window(q_window)
        k0, k1 = self._clip_window(k_window)
        probs, _ = cap.attention.block_probs(layer, [head], q0, q1, trim_keys=False)  # (1, q, T)
        z = probs[0, :, k0:k1].cpu().contiguous()                                     # (q, k)
        return AttentionView(layer, head, kv, z.numpy(), block_spans(q1, 1)[q0:], block_spans(k1, 1)[k0:], 1, True)

    def _clip_window(self, window: Span | None) -> Span:
        t = self.num_tokens
        if window is None:
            return max(0, t - self.max_side), t
        a, b = sorted((int(window[0]), int(window[1])))
        a, b = max(0, min(a, t - 1)), max(1, min(b, t))
        if b <= a:
            b = a + 1
        if b - a > self.max_side:
            a = b - self.max_side
        return a, b

    def _pooled_heads(self, layer: int, factor: int) -> torch.Tensor:
        """(H, n, n) float32: every head of a layer pooled like AttentionStore.pooled, in row blocks."""
        store = self.capture.attention
        t = self.num_tokens
        heads = list(range(self.capture.num_heads))
        n = math.ceil(t / factor)
        rows = max(factor, (BLOCK_ELEMENTS // max(1, len(heads) * t)) // factor * factor)
        out = torch.zeros(len(heads), n, n)
        for r0 in range(0, t, rows):
            r1 = min(t, r0 + rows)
            p, _ = store.block_probs(layer, heads, r0, r1, trim_keys=False)     # (H, b, T)
            p = pool_sum(p.cpu(), factor)                                        # (H, b, n)
            cells = torch.arange(r0, r1) // factor
            out.index_add_(1, cells, p)
        counts = torch.full((n,), float(factor))
        counts[-1] = t - factor * (n - 1)
        return out / counts[None, :, None]

    def overview(self, tile: int = OVERVIEW_TILE) -> Overview:
        """All layers × heads as tiles of at most `tile` cells a side; computed once per capture."""
        def compute() -> Overview:
            factor = pool_factor(self.num_tokens, tile)
            tiles = torch.stack([self._pooled_heads(layer, factor) for layer in self.attention_layers])
            return Overview(tiles.numpy(), list(self.attention_layers), factor, list(self.capture.kv_head_of))
        return self._cached(("overview", tile), compute)

    def head_summaries(self, token: int | None = None) -> dict[str, np.ndarray]:
        """entropy / first_token / lookback as (L, H) float32: means over queries, or at one query."""
        def compute() -> dict[str, np.ndarray]:
            s = self.capture.head_summaries()
            if token is None:
                return {k: v.numpy().astype(np.float32) for k, v in s.per_head().items()}
            return {"entropy": s.entropy[..., token].numpy(), "first_token": s.first_token[..., token].numpy(),
                    "lookback": s.lookback[..., token].numpy()}
        return self._cached(("summaries", token), compute)

    @property
    def summaries_ready(self) -> bool:
        return self.capture.summaries_cache is not None

    def token_attention(self, token: int, head: int | None = None) -> TokenAttention:
        """Row `token` of every layer's attention (one head, or the mean over heads)."""
        def compute() -> TokenAttention:
            store = self.capture.attention
            heads = list(range(self.capture.num_heads)) if head is None else [head]
            rows = []
            for layer in self.attention_layers:
                p, _ = store.block_probs(layer, heads, token, token + 1, trim_keys=False)   # (h, 1, T)
                rows.append(p[:, 0].mean(0).cpu())                                          # (T,)
            z = torch.stack(rows)                                                             # (L, T)
            factor = pool_factor(self.num_tokens, self.max_side)
            return TokenAttention(token, head, pool_sum(z, factor).numpy(), list(self.attention_layers),
                                  block_spans(self.num_tokens, factor), factor)
        return self._cached(("token_attention", token, head), compute)

    # ---- residual stream and norms ----------------------------------------------------------
    def residual_norms(self) -> ResidualNorms:
        def compute() -> ResidualNorms:
            cap = self.capture
            rows, names, layers = [], [], []
            if cap.embeddings is not None:
                rows.append(torch.linalg.vector_norm(cap.embeddings.float(), dim=-1))
                names.append("embeddings")
                layers.append(-1)
            if cap.residual is not None:
                norms = torch.linalg.vector_norm(cap.residual.float(), dim=-1)              # (R, T)
                rows.extend(norms)
                names.extend(f"layer {l}" for l in cap.residual_layers)
                layers.extend(cap.residual_layers)
            if not rows:
                raise LookupError("this capture holds no residual stream")
            z = torch.stack(rows)                                                           # (R, T)
            factor = pool_factor(self.num_tokens, self.max_side)
            return ResidualNorms(pool_mean(z, factor).numpy(), names, layers,
                                 block_spans(self.num_tokens, factor), factor)
        return self._cached(("residual_norms",), compute)

    def norm_rows(self) -> list[NormRow]:
        """Every captured norm module, with its layer and role found from the capture's anatomy."""
        def compute() -> list[NormRow]:
            cap = self.capture
            where: dict[str, tuple[int, str]] = {}
            for lp in cap.anatomy.layers:
                for name in lp.norms:
                    role = name[len(lp.name) + 1:] if name.startswith(lp.name + ".") else name.rsplit(".", 1)[-1]
                    where[name] = (lp.index, role)
            if cap.anatomy.final_norm:
                where[cap.anatomy.final_norm] = (cap.num_layers, "final norm")
            rows = []
            for name, stats in cap.norms.items():
                layer, role = where.get(name, (cap.num_layers, name.rsplit(".", 1)[-1]))
                rows.append(NormRow(name, layer, role, stats.input_rms.float().numpy(),
                                    stats.output_mean.float().numpy(), stats.output_std.float().numpy(),
                                    None if stats.weight is None else stats.weight.float().numpy()))
            return rows
        return self._cached(("norm_rows",), compute)

    def contributions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(attention, MLP) output norms, each (L, T) float32, or None when not captured."""
        cap = self.capture
        if cap.attn_out_norm is None or cap.mlp_out_norm is None:
            return None
        return self._cached(("contributions",), lambda: (cap.attn_out_norm.float().numpy(),
                                                         cap.mlp_out_norm.float().numpy()))

    # ---- embeddings -----------------------------------------------------------------------
    def projection(self, layer: int | None, drop_first: bool = False, normalise: bool = False) -> Projection:
        """PCA of the input embeddings (layer None) or of the hidden states after `layer`.

        normalise: divide each vector by its RMS first, as the next norm module does. Without it a
        few tokens with massive activations take the whole first component.
        """
        def compute() -> Projection:
            cap = self.capture
            if layer is None:
                if cap.embeddings is None:
                    raise LookupError("this capture holds no input embeddings")
                vectors = cap.embeddings
            else:
                if cap.residual is None or layer not in cap.residual_layers:
                    raise LookupError(f"the residual stream after layer {layer} was not captured")
                vectors = cap.residual[cap.residual_layers.index(layer)]                  # (T, d)
            if normalise:
                v = vectors.float()                                                    # (T, d)
                vectors = v / v.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
            return pca(vectors, k=2, exclude=(0,) if drop_first and self.num_tokens > 2 else ())
        return self._cached(("pca", layer, drop_first, normalise), compute)

    # ---- logit lens -----------------------------------------------------------------------
    @property
    def lens_available(self) -> bool:
        cap = self.capture
        return (cap.lens_head is not None and cap.residual is not None) or bool(cap.lens_cache)

    def lens_window(self, start: int, stop: int, k: int = 3) -> LensWindow:
        """Top-k after every kept layer for positions [start, stop), at most LENS_MAX_POSITIONS."""
        start, stop = self._clip_window((start, stop))
        if stop - start > LENS_MAX_POSITIONS:
            start = stop - LENS_MAX_POSITIONS
        return self._cached(("lens", start, stop, k), lambda: self._lens_window(start, stop, k))

    def _lens_result(self, k: int, positions: list[int] | None) -> LensResult:
        cap = self.capture
        if cap.lens_head is not None and cap.residual is not None:
            return cap.logit_lens(k=k, positions=positions)
        for cached_k in sorted(cap.lens_cache):
            if cached_k >= k:
                r = cap.lens_cache[cached_k].select(None, positions)
                return LensResult(r.layers, r.positions, r.token_ids[..., :k], r.probs[..., :k])
        if cap.lens_cache:
            best = max(cap.lens_cache)
            return cap.lens_cache[best].select(None, positions)
        raise LookupError("the logit lens needs the model's final norm and LM head, or a capture file "
                          "saved with its logit lens")

    def _lens_window(self, start: int, stop: int, k: int) -> LensWindow:
        r = self._lens_result(k, list(range(start, stop)))
        ids = r.token_ids.numpy()
        texts = [[[self.capture.token_text(int(i)) for i in cell] for cell in row] for row in ids]
        return LensWindow(list(r.layers), list(r.positions), ids, r.probs.float().numpy(), texts)

    def trajectory(self, position: int) -> Trajectory:
        """Rank and probability, after every kept layer, of the token the model finally predicts."""
        position = position % self.num_tokens
        return self._cached(("trajectory", position), lambda: self._trajectory(position))

    def _trajectory(self, position: int) -> Trajectory:
        cap = self.capture
        layers = list(cap.residual_layers)
        if cap.lens_head is not None and cap.residual is not None:
            hidden = cap.residual[:, position]                                   # (R, d)
            logits = cap.lens_head.logits(hidden).float().cpu()                  # (R, V)
            if position == self.num_tokens - 1 and cap.last_logits is not None:
                target = int(cap.last_logits.argmax())
            else:
                target = int(logits[-1].argmax())
            probs = torch.softmax(logits, -1)
            rank = (logits > logits[:, target:target + 1]).sum(-1)
            tops = [cap.token_text(int(i)) for i in logits.argmax(-1)]
            return Trajectory(position, target, cap.token_text(target), layers,
                              probs[:, target].numpy().astype(np.float32), rank.numpy().astype(np.int64),
                              tops, True, int(logits.shape[-1]))
        r = self._lens_result(FILE_LENS_K, [position])
        ids, probs = r.token_ids[:, 0], r.probs[:, 0]                             # (R, k)
        target = int(ids[-1, 0])
        hit = ids == target
        rank = torch.where(hit.any(-1), hit.float().argmax(-1), torch.tensor(-1))
        prob = torch.where(hit.any(-1), (probs * hit).sum(-1), torch.tensor(float("nan")))
        return Trajectory(position, target, cap.token_text(target), list(r.layers), prob.numpy().astype(np.float32),
                          rank.numpy().astype(np.int64), [cap.token_text(int(i)) for i in ids[:, 0]], False,
                          int(ids.shape[-1]))

    # ---- the guided tour's numbers --------------------------------------------------------
    def tour_facts(self) -> dict[str, Any]:
        """Numbers the tour's text quotes, from this capture. Missing parts are simply absent."""
        def compute() -> dict[str, Any]:
            cap = self.capture
            t = self.num_tokens
            facts: dict[str, Any] = {
                "model": cap.model_name, "n_tokens": t, "n_layers": cap.num_layers, "n_heads": cap.num_heads,
                "n_kv_heads": cap.num_kv_heads, "group_size": max(1, cap.num_heads // max(1, cap.num_kv_heads)),
                "hidden": cap.hidden_size, "first_token": cap.token_texts[0], "last_token": cap.token_texts[-1],
                "n_norms": len(cap.norms),
            }
            if cap.last_logits is not None:
                p = torch.softmax(cap.last_logits.float(), -1)
                top = int(p.argmax())
                facts.update(prediction=cap.token_text(top), prediction_prob=float(p[top]))
            try:
                norms = self.residual_norms()
                body = slice(1, None) if norms.z.shape[1] > 1 else slice(None)
                first, last = float(norms.z[0, body].mean()), float(norms.z[-1, body].mean())
                facts.update(norm_start=first, norm_end=last, norm_growth=last / first if first else float("nan"),
                             norm_first_token=float(norms.z[-1, 0]))
            except LookupError:
                pass
            if self.has_attention:
                s = self.head_summaries()
                sink = s["first_token"]
                li, h = np.unravel_index(int(np.argmax(sink)), sink.shape)
                facts.update(sink_layer=self.attention_layers[li], sink_head=int(h), sink_share=float(sink[li, h]))
                look = s["lookback"].copy()
                look[s["entropy"] > np.median(s["entropy"])] = np.inf     # sharp heads only
                li, h = np.unravel_index(int(np.argmin(look)), look.shape)
                facts.update(local_layer=self.attention_layers[li], local_head=int(h),
                             local_lookback=float(s["lookback"][li, h]))
            contrib = self.contributions()
            if contrib is not None:
                attn, mlp = contrib
                facts.update(attn_peak_layer=int(attn.mean(-1).argmax()), mlp_peak_layer=int(mlp.mean(-1).argmax()))
            if self.lens_available and cap.residual is not None:
                try:
                    tr = self.trajectory(t - 1)
                    settled = next((tr.layers[i] for i in range(len(tr.layers)) if np.all(tr.rank[i:] == 0)), None)
                    facts.update(final_token=tr.target_text, settle_layer=settled)
                except LookupError:
                    pass
            return facts
        return self._cached(("tour_facts",), compute)

    # ---- files and tables ------------------------------------------------------------------
    def capture_file(self, include_lens: bool = True) -> bytes:
        """The capture as a file (explorer.record.capture_file format), with the full logit lens when asked
        and the model is there, so the file's lens view works without the model."""
        def compute() -> bytes:
            cap = self.capture
            if include_lens and cap.lens_head is not None and cap.residual is not None:
                cap.logit_lens(k=FILE_LENS_K)
            fd, path = tempfile.mkstemp(suffix=".safetensors")
            os.close(fd)
            try:
                cap.save(path)
                with open(path, "rb") as f:
                    return f.read()
            finally:
                os.unlink(path)
        return self._cached(("file", include_lens), compute)

    def tokens_table(self) -> pd.DataFrame:
        cap = self.capture
        return pd.DataFrame({"position": range(self.num_tokens), "id": cap.token_ids.tolist(),
                             "token": cap.tokens, "text": cap.token_texts})

    def head_table(self) -> pd.DataFrame:
        s = self.head_summaries()
        rows = [{"layer": layer, "head": h, "kv_head": self.capture.kv_head_of[h],
                 "entropy": float(s["entropy"][li, h]), "first_token_share": float(s["first_token"][li, h]),
                 "lookback": float(s["lookback"][li, h])}
                for li, layer in enumerate(self.attention_layers) for h in range(self.capture.num_heads)]
        return pd.DataFrame(rows)

    def residual_table(self) -> pd.DataFrame:
        norms = self.residual_norms()
        cols = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in norms.spans]
        return pd.DataFrame(norms.z, index=norms.row_names, columns=cols).rename_axis("residual after")

    def norm_table(self) -> pd.DataFrame:
        rows = []
        for r in self.norm_rows():
            w = r.weight
            rows.append({"module": r.name, "layer": r.layer, "role": r.role,
                         "input_rms_mean": float(r.input_rms.mean()), "output_mean": float(r.output_mean.mean()),
                         "output_std": float(r.output_std.mean()),
                         "gain_mean": float(w.mean()) if w is not None else None,
                         "gain_min": float(w.min()) if w is not None else None,
                         "gain_max": float(w.max()) if w is not None else None})
        return pd.DataFrame(rows)

    def lens_table(self, window: LensWindow) -> pd.DataFrame:
        rows = [{"layer": layer, "position": pos, "input_token": self.texts[pos], "rank": r,
                 "token": window.texts[li][pi][r], "probability": float(window.probs[li, pi, r])}
                for li, layer in enumerate(window.layers) for pi, pos in enumerate(window.positions)
                for r in range(window.probs.shape[-1])]
        return pd.DataFrame(rows)

    def projection_table(self, proj: Projection) -> pd.DataFrame:
        return pd.DataFrame({"position": proj.positions, "text": [self.texts[p] for p in proj.positions],
                             "pc1": proj.coords[:, 0].numpy(), "pc2": proj.coords[:, 1].numpy()})


__all__ = ["AttentionView", "FILE_LENS_K", "LENS_MAX_POSITIONS", "LensWindow", "MAX_SIDE", "NormRow", "Overview",
           "Readout", "ResidualNorms", "Span", "TokenAttention", "Trajectory", "block_spans", "cpu_float_lens_head",
           "pool_factor", "pool_mean", "pool_sum"]
