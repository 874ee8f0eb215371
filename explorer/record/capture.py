"""One forward pass that records every decoder layer's internals for the views.

Why one call: the views (residual stream, norms, attention, logit lens) all read the same run,
so the prompt is run once, with hooks that exist only for that run, and the model's fast
attention. Attention probabilities are not materialised here; see explorer/attention.py.
"""
from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from explorer.record import attention as attn
from explorer.model.anatomy import Anatomy, find_anatomy, resolve
from explorer.record.attention import AttentionStore, HeadSummaries, Offloader, Recorder
from explorer.model.loading import context_length as config_context_length

PARTS: frozenset[str] = frozenset({"embeddings", "residual", "norms", "block_norms", "attention", "logits"})
"""What a capture can record. `block_norms` = norms of the attention and MLP outputs."""


class PromptTooLongError(ValueError):
    """The prompt has more tokens than the model's context window."""


@dataclass
class CaptureOptions:
    """What to record and how much memory it may take.

    parts: subset of PARTS; leave out what a view does not need (e.g. {"residual"} for a lens).
    layers: decoder layers whose residual stream and attention are kept (None = all). Norm and
        block-norm statistics are per token and always kept for every layer.
    memory_budget_bytes: cap on what the capture stores (CPU RAM); over it, residuals and
        attention keep evenly spaced layers only and a note says so. None = half the free RAM.
    offload_to_cpu: on GPUs, copy recorded tensors to CPU as the forward goes (asynchronously);
        False keeps them on the device (faster summaries, more GPU memory).
    """
    parts: frozenset[str] = PARTS
    layers: Sequence[int] | None = None
    memory_budget_bytes: int | None = None
    offload_to_cpu: bool = True
    add_generation_prompt: bool = True     # chat messages: end with the assistant's turn header
    add_special_tokens: bool = True        # plain prompts: let the tokenizer add BOS etc.
    residual_dtype: torch.dtype | None = None  # None = the dtype the model computes in
    model_name: str | None = None          # shown in summaries; None = the config's name or path
    precision: str | None = None           # how the weights were loaded ("nf4", "bf16", ...); None = unknown
    top_logits: int = 20                   # decoded strings of this many top next tokens are kept

    def __post_init__(self) -> None:
        unknown = set(self.parts) - PARTS
        if unknown:
            raise ValueError(f"unknown capture parts {sorted(unknown)}; choose from {sorted(PARTS)}")
        self.parts = frozenset(self.parts)


@dataclass
class NormStats:
    """One normalisation module's view of each token."""
    input_rms: torch.Tensor      # (T,) root mean square of the input over the hidden dimension
    output_mean: torch.Tensor    # (T,) mean of the output over the hidden dimension
    output_std: torch.Tensor     # (T,) standard deviation of the output over the hidden dimension
    weight: torch.Tensor | None  # (d,) float32, the learned per-channel scale as stored


@dataclass
class Capture:
    """Everything one prompt's forward pass showed, on CPU, independent of the model once saved.

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
    attention: AttentionStore | None         # Q/K per kept layer; probabilities on demand
    num_layers: int
    num_heads: int
    num_kv_heads: int
    hidden_size: int
    kv_head_of: list[int]                    # (H,) query head h reads KV head kv_head_of[h]
    anatomy: Anatomy
    notes: list[str] = field(default_factory=list)   # what was missing or reduced, in words
    precision: str | None = None             # the weights' precision ("nf4", "bf16", ...); None = unknown
    vocab: dict[int, str] = field(default_factory=dict)  # decoded strings of ids this capture shows
    summaries_cache: HeadSummaries | None = field(default=None, repr=False)
    lens_cache: dict[int, Any] = field(default_factory=dict, repr=False)   # k -> LensResult (all layers)
    lens_head: Any = field(default=None, repr=False, compare=False)        # explorer.analyse.lens.LensHead
    decode: Callable[[int], str] | None = field(default=None, repr=False, compare=False)

    # ---- structure ------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def attention_layers(self) -> list[int]:
        return self.attention.layer_indices if self.attention is not None else []

    def kv_groups(self) -> list[list[int]]:
        """For each KV head, the query heads that share it."""
        return [[h for h, g in enumerate(self.kv_head_of) if g == kv] for kv in range(self.num_kv_heads)]

    def token_text(self, token_id: int) -> str:
        if token_id in self.vocab:
            return self.vocab[token_id]
        if self.decode is not None:
            self.vocab[token_id] = self.decode(token_id)
            return self.vocab[token_id]
        return f"<{token_id}>"

    # ---- attention ------------------------------------------------------------------------
    def _store(self) -> AttentionStore:
        if self.attention is None or not self.attention.layers:
            raise LookupError("this capture holds no attention (not requested, or the model does not "
                              "dispatch through transformers' attention interface)")
        return self.attention

    def attention_map(self, layer: int, head: int) -> torch.Tensor:
        """(T, T) float32 probabilities of one head; row i is query i. Equals eager output.
        T² floats: past a few thousand tokens, views should ask for attention_map_pooled."""
        return self._store().probabilities(layer, head)

    def attention_map_pooled(self, layer: int, head: int, max_size: int = 256) -> tuple[torch.Tensor, int]:
        """(n, n) with n ≤ max_size, block-pooled (rows still sum to 1), and tokens per block."""
        return self._store().pooled(layer, head, max_size)

    def head_summaries(self) -> HeadSummaries:
        """Entropy, first-token attention and look-back per (layer, head, query); computed once."""
        if self.summaries_cache is None:
            self.summaries_cache = self._store().summaries()
        return self.summaries_cache

    # ---- logit lens -----------------------------------------------------------------------
    def logit_lens(self, k: int = 5, layers: Sequence[int] | None = None,
                   positions: Sequence[int] | None = None):
        """Top-k next tokens after each kept layer: see explorer.analyse.lens.logit_lens."""
        from explorer.analyse.lens import logit_lens
        return logit_lens(self, k=k, layers=layers, positions=positions)

    # ---- files ----------------------------------------------------------------------------
    def save(self, path: str, include_attention: bool = True) -> None:
        from explorer.record.capture_file import save_capture
        save_capture(self, path, include_attention=include_attention)

    @classmethod
    def open(cls, path: str) -> "Capture":
        from explorer.record.capture_file import open_capture
        return open_capture(path)

    def summary(self) -> str:
        from explorer.record.capture_file import describe_capture
        return describe_capture(self)


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def forward_hooks(registrations: Sequence[tuple[nn.Module, str, Callable]]) -> Iterator[list]:
    """Register ("pre" | "post", fn) hooks and always remove every one, on exceptions too."""
    handles: list = []
    try:
        for module, kind, fn in registrations:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "last_hidden_state", None)


class _Session:
    """Hook bodies for one capture. Every hook first checks that the forward running it belongs
    to this capture (the thread's active recorder), so two threads on one model never mix.

    Statistics are reductions straight from the model dtype into float32 (no float copies of the
    activations); residuals are copied into one preallocated (layers, T, d) buffer, asynchronously
    on CUDA. Holding activations by reference and batching the statistics after the forward was
    tried: it cost more (page faults on fresh memory) than the reductions it saved.
    """

    def __init__(self, recorder: Recorder, offload: Offloader, keep: list[int],
                 residual_dtype: torch.dtype | None):
        self.recorder = recorder
        self.offload = offload
        self.keep = keep
        self.slot = {layer: i for i, layer in enumerate(keep)}
        self.residual_dtype = residual_dtype
        self.embeddings: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None           # (len(keep), T, d) buffer
        self.filled: set[int] = set()
        self.norm_stats: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # ‖x‖, mean y, ‖y‖
        self.norm_dims: dict[str, tuple[int, int]] = {}
        self.attn_norm: dict[int, torch.Tensor] = {}
        self.mlp_norm: dict[int, torch.Tensor] = {}

    def mine(self) -> bool:
        return attn._ACTIVE.get() is self.recorder

    def embeddings_hook(self, module, args, kwargs=None):
        # kwargs defaults: torch may call a pre-hook removed by another thread without them.
        if not self.mine():
            return None
        hidden = args[0] if args else (kwargs or {}).get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            dtype = self.residual_dtype or hidden.dtype
            self.embeddings = self.offload.new_buffer(tuple(hidden.shape[1:]), dtype, hidden.device)
            self.offload.copy_into(self.embeddings, hidden[0])
        return None

    def residual_hook(self, index: int):
        def hook(module, args, output):
            if not self.mine() or index not in self.slot:
                return
            hidden = _first_tensor(output)
            if hidden is None:
                return
            if self.residual is None:
                dtype = self.residual_dtype or hidden.dtype
                self.residual = self.offload.new_buffer((len(self.keep), *hidden.shape[1:]), dtype, hidden.device)
            self.offload.copy_into(self.residual[self.slot[index]], hidden[0])
            self.filled.add(index)
        return hook

    def norm_hook(self, name: str):
        def hook(module, args, output):
            if not self.mine() or not args or not isinstance(args[0], torch.Tensor):
                return
            out = _first_tensor(output)
            if out is None:
                return
            x, y = args[0][0], out[0]                                                 # (T, d)
            # Raw reductions only; scaling and std are done once for all norms in gather_small.
            self.norm_stats[name] = (torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32),
                                     y.mean(-1, dtype=torch.float32),
                                     torch.linalg.vector_norm(y, dim=-1, dtype=torch.float32))
            self.norm_dims[name] = (x.shape[-1], y.shape[-1])
        return hook

    def block_norm_hook(self, kind: str, index: int):
        target = self.attn_norm if kind == "attn" else self.mlp_norm

        def hook(module, args, output):
            if self.mine():
                out = _first_tensor(output)
                if out is not None:
                    target[index] = torch.linalg.vector_norm(out[0], dim=-1, dtype=torch.float32)
        return hook


def gather_small(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Many small tensors to CPU with one transfer per (device, shape, dtype) group: one
    synchronising copy each would cost more than computing them did."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, tuple(t.shape), t.dtype), []).append(i)
    for (device, _, _), idx in groups.items():
        if device.type == "cpu":
            for i in idx:
                out[i] = tensors[i]
            continue
        host = torch.stack([tensors[i] for i in idx]).cpu()
        for j, i in enumerate(idx):
            out[i] = host[j]
    return out  # type: ignore[return-value]


def _norm_stats_from_raw(x_norm: torch.Tensor, y_mean: torch.Tensor, y_norm: torch.Tensor,
                         dims: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input RMS, output mean, output std from ‖x‖, mean(y), ‖y‖ over the last dimensions
    (dims): std comes from the output's RMS and mean, so no float copy of an activation is made."""
    out_rms = y_norm * dims[1] ** -0.5
    return x_norm * dims[0] ** -0.5, y_mean, (out_rms.square() - y_mean.square()).clamp_min(0).sqrt()


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

Prompt = str | Sequence[dict] | Sequence[int] | torch.Tensor


def tokenize(tokenizer, prompt: Prompt, options: CaptureOptions) -> torch.Tensor:
    """(T,) int64 ids for a plain prompt, chat messages, or ids given directly."""
    if isinstance(prompt, torch.Tensor):
        return prompt.reshape(-1).to(torch.long).cpu()
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer")
        return torch.tensor(tokenizer(prompt, add_special_tokens=options.add_special_tokens)["input_ids"],
                            dtype=torch.long)
    items = list(prompt)
    if items and isinstance(items[0], dict):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat messages need a tokenizer with a chat template")
        text = tokenizer.apply_chat_template(items, tokenize=False,
                                             add_generation_prompt=options.add_generation_prompt)
        return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    return torch.tensor([int(i) for i in items], dtype=torch.long)


def context_length(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return None if config is None else config_context_length(config)


def model_shape(model: nn.Module, anatomy: Anatomy) -> tuple[int, int, int, int, int]:
    """(layers, heads, kv heads, head dim, hidden size) from the config, checked against anatomy."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    kv = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or (hidden // heads if heads else 0))
    return len(anatomy.layers), heads, kv, head_dim, hidden


_ANATOMY_CACHE: "weakref.WeakKeyDictionary[nn.Module, Anatomy]" = weakref.WeakKeyDictionary()


def anatomy_of(model: nn.Module) -> Anatomy:
    """find_anatomy, remembered per model object (inspection walks every module)."""
    found = _ANATOMY_CACHE.get(model)
    if found is None:
        found = _ANATOMY_CACHE[model] = find_anatomy(model)
    return found


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype activations flow in: the embedding weight's (quantized layers compute in it too)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.is_floating_point():
        return weight.dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _input_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    return next(model.parameters()).device


def plan_layers(n_layers: int, wanted: Sequence[int] | None, bytes_per_layer: int,
                budget: int) -> tuple[list[int], str | None]:
    """Evenly spaced layers (first and last included) that fit the budget, and a note if reduced."""
    chosen = sorted(set(range(n_layers) if wanted is None else (i % n_layers for i in wanted)))
    fit = max(1, budget // max(1, bytes_per_layer))
    if len(chosen) <= fit:
        return chosen, None
    if fit == 1:
        kept = [chosen[-1]]
    else:
        kept = sorted({chosen[round(i * (len(chosen) - 1) / (fit - 1))] for i in range(fit)})
    note = (f"memory budget: residual stream and attention kept for {len(kept)} of {len(chosen)} layers "
            f"({bytes_per_layer * len(chosen) / 2**30:.2f} GiB needed, budget {budget / 2**30:.2f} GiB); "
            "long attention maps are best read pooled (attention_map_pooled)")
    return kept, note


def _default_budget(device: torch.device, offload_to_cpu: bool) -> int:
    """Half of what is free where the recorded tensors will live."""
    if device.type == "cuda" and not offload_to_cpu:
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        import psutil
        return int(psutil.virtual_memory().available * 0.5)
    except Exception:   # noqa: BLE001
        return 8 << 30


# --------------------------------------------------------------------------------------------
# capture()
# --------------------------------------------------------------------------------------------

def capture(model: nn.Module, tokenizer, prompt: Prompt, options: CaptureOptions | None = None) -> Capture:
    """Run `prompt` once through `model` and return what every view needs, gathered on CPU.

    prompt: text, chat messages ([{"role": ..., "content": ...}]), or token ids.
    Raises PromptTooLongError when the prompt exceeds the model's context window.
    """
    options = options or CaptureOptions()
    parts = options.parts
    anatomy = anatomy_of(model)
    n_layers, n_heads, n_kv, head_dim, hidden = model_shape(model, anatomy)
    ids = tokenize(tokenizer, prompt, options)
    t = int(ids.shape[0])
    if t == 0:
        raise ValueError("the prompt is empty after tokenization")
    ctx = context_length(model)
    if ctx is not None and t > ctx:
        raise PromptTooLongError(f"the prompt has {t} tokens but the model's context window is {ctx} tokens; "
                                 f"shorten it by {t - ctx} tokens")

    notes = list(f"not found: {m}" for m in anatomy.missing)
    dtype = _model_dtype(model)
    act_bytes = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    res_dtype = options.residual_dtype or dtype
    res_bytes = torch.finfo(res_dtype).bits // 8
    per_layer = 0
    if "attention" in parts:
        per_layer += (n_heads + n_kv) * t * head_dim * act_bytes
    if "residual" in parts:
        per_layer += t * hidden * res_bytes
    budget = (options.memory_budget_bytes if options.memory_budget_bytes is not None
              else _default_budget(_input_device(model), options.offload_to_cpu))
    keep, note = plan_layers(n_layers, options.layers, per_layer, budget)
    if note:
        notes.append(note)
    keep_set = set(keep)

    offload = Offloader(to_cpu=options.offload_to_cpu)
    store = AttentionStore(num_heads=n_heads, num_kv_heads=n_kv)
    layer_of = {}
    for lp in anatomy.layers:
        module = resolve(model, lp.attention)
        if module is not None:
            layer_of[id(module)] = lp.index
    recorder = Recorder(store, layer_of, keep_set if "attention" in parts else set(), offload)
    session = _Session(recorder, offload, keep if "residual" in parts else [], options.residual_dtype)

    registrations: list[tuple[nn.Module, str, Callable]] = []
    layer_modules = [resolve(model, lp.name) for lp in anatomy.layers]
    if "embeddings" in parts and layer_modules:
        registrations.append((layer_modules[0], "pre", session.embeddings_hook))
    for lp, module in zip(anatomy.layers, layer_modules):
        if "residual" in parts and lp.index in keep_set:
            registrations.append((module, "post", session.residual_hook(lp.index)))
        if "block_norms" in parts:
            for name, kind in ((lp.attention, "attn"), (lp.mlp, "mlp")):
                sub = resolve(model, name)
                if sub is not None:
                    registrations.append((sub, "post", session.block_norm_hook(kind, lp.index)))
    if "norms" in parts:
        for name in anatomy.all_norms():
            sub = resolve(model, name)
            if sub is not None:
                registrations.append((sub, "post", session.norm_hook(name)))

    params = inspect.signature(model.forward).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    if "use_cache" in params or open_kwargs:
        kwargs["use_cache"] = False
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    input_ids = ids[None].to(_input_device(model))

    want_attention = "attention" in parts and bool(keep_set)
    switch = attn.explorer_attention_enabled(model) if want_attention else contextlib.nullcontext(False)
    with torch.inference_mode(), forward_hooks(registrations), switch as switched, attn.recording(recorder):
        output = model(input_ids=input_ids, **kwargs)
        offload.finish()
    if want_attention and not switched:
        notes.append("attention probabilities: this model does not dispatch through transformers' "
                     "attention interface, so its attention could not be recorded")

    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, torch.Tensor) and output.dim() == 3:
        logits = output
    last_logits = logits[0, -1].float().cpu() if logits is not None and "logits" in parts else None

    norm_names = list(session.norm_stats)
    weights = {}
    for name in norm_names:
        w = getattr(resolve(model, name), "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() == 1:
            weights[name] = w.detach()
    small = gather_small([t for name in norm_names for t in session.norm_stats[name]]
                         + list(weights.values())
                         + [session.attn_norm[i] for i in sorted(session.attn_norm)]
                         + [session.mlp_norm[i] for i in sorted(session.mlp_norm)])
    norms: dict[str, NormStats] = {}
    for i, name in enumerate(norm_names):
        rms, mean, std = _norm_stats_from_raw(*small[3 * i: 3 * i + 3], session.norm_dims[name])
        norms[name] = NormStats(rms, mean, std, None)
    pos = 3 * len(norm_names)
    for name in weights:
        norms[name].weight = small[pos].float().clone()
        pos += 1
    attn_small = dict(zip(sorted(session.attn_norm), small[pos: pos + len(session.attn_norm)]))
    pos += len(session.attn_norm)
    mlp_small = dict(zip(sorted(session.mlp_norm), small[pos: pos + len(session.mlp_norm)]))

    def stack(d: dict[int, torch.Tensor]) -> torch.Tensor | None:
        if len(d) != n_layers:
            return None
        return torch.stack([d[i] for i in range(n_layers)])

    residual_layers = [layer for layer in session.keep if layer in session.filled]
    residual = session.residual
    if residual is not None and len(residual_layers) < len(session.keep):
        residual = residual[[session.slot[layer] for layer in residual_layers]]
    if "attention" in parts and switched and len(store.layers) < len(keep_set):
        notes.append(f"attention recorded for {len(store.layers)} of {len(keep_set)} requested layers")

    groups = max(1, n_heads // max(1, n_kv))
    cap = Capture(
        model_name=options.model_name or str(getattr(getattr(model, "config", None), "_name_or_path", "")
                                             or type(model).__name__),
        token_ids=ids,
        tokens=_token_strings(tokenizer, ids),
        token_texts=_token_texts(tokenizer, ids),
        embeddings=session.embeddings,
        residual=residual,
        residual_layers=residual_layers,
        norms=norms,
        attn_out_norm=stack(attn_small),
        mlp_out_norm=stack(mlp_small),
        last_logits=last_logits,
        attention=store if store.layers else None,
        num_layers=n_layers, num_heads=n_heads, num_kv_heads=n_kv, hidden_size=hidden,
        kv_head_of=[h // groups for h in range(n_heads)],
        anatomy=anatomy,
        notes=notes,
        precision=options.precision,
    )
    if tokenizer is not None:
        cap.decode = lambda i: tokenizer.decode([int(i)])
        cap.vocab.update({int(i): s for i, s in zip(ids.tolist(), cap.token_texts)})
        if last_logits is not None:
            for i in last_logits.topk(min(options.top_logits, last_logits.numel())).indices.tolist():
                cap.token_text(i)
    from explorer.analyse.lens import LensHead
    cap.lens_head = LensHead.from_model(model, anatomy)
    return cap


def _token_strings(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return [str(s) for s in tokenizer.convert_ids_to_tokens(ids.tolist())]


def _token_texts(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return [tokenizer.decode([i]) for i in ids.tolist()]


__all__ = ["PARTS", "Capture", "CaptureOptions", "NormStats", "PromptTooLongError", "capture",
           "forward_hooks", "anatomy_of", "tokenize"]
