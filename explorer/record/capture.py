"""capture(): one forward pass that records every decoder layer's internals for the views.

Why one call: the views (residual stream, norms, attention, logit lens) all read the same run,
so the prompt is run once, with hooks that exist only for that run, and the model's fast
attention (see explorer.record.attention_fn). It reads as three steps:
  plan_capture   tokens, model shape, which layers fit the memory budget — nothing runs yet
                 (explorer/record/capture_plan.py);
  run_forward    the forward with hooks and the recording attention function;
  assemble       gather what the hooks kept into a plain-data Capture on CPU.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from explorer.model.anatomy import resolve
from explorer.record.attention_fn import Recorder, explorer_attention_enabled, recording
from explorer.record.attention_store import AttentionStore, Placement
from explorer.record.capture_data import DEFAULT_PARTS, PARTS, Capture, CaptureOptions, NormStats, PromptTooLongError
from explorer.record.capture_plan import CapturePlan, Prompt, input_device, plan_capture
from explorer.record.components_recorder import ComponentsRecorder, start_components
from explorer.record.eager_fallback import FallbackPlan, plan_fallback, store_from_output
from explorer.record.hooks import HookSession, forward_hooks, norm_stats_from_raw
from explorer.record.offload import Offloader, gather_small
from explorer.record.token_text import token_text

# --------------------------------------------------------------------------------------------
# Step 2: run
# --------------------------------------------------------------------------------------------

@dataclass
class Recorded:
    """What the forward left behind, before it is gathered into a Capture."""
    session: HookSession
    store: AttentionStore
    output: Any
    switched: bool               # the model ran the recording attention function
    components: ComponentsRecorder | None = None
    fallback: FallbackPlan | None = None
    offload: Offloader | None = None


def _registrations(model: nn.Module, plan: CapturePlan, session: HookSession) -> list[tuple[nn.Module, str, Callable]]:
    """(module, "pre" | "post", hook) for every part the plan records."""
    parts, keep = plan.parts, set(plan.keep)
    out: list[tuple[nn.Module, str, Callable]] = []
    layer_modules = [resolve(model, lp.name) for lp in plan.anatomy.layers]
    if "embeddings" in parts and layer_modules:
        out.append((layer_modules[0], "pre", session.embeddings_hook))
    for lp, module in zip(plan.anatomy.layers, layer_modules):
        if "residual" in parts and lp.index in keep:
            out.append((module, "post", session.residual_hook(lp.index)))
        if "block_norms" in parts:
            for name, kind in ((lp.attention, "attn"), (lp.mlp, "mlp")):
                sub = resolve(model, name)
                if sub is not None:
                    out.append((sub, "post", session.block_norm_hook(kind, lp.index)))
    if "norms" in parts:
        for name in plan.anatomy.all_norms():
            sub = resolve(model, name)
            if sub is not None:
                out.append((sub, "post", session.norm_hook(name)))
    return out


def forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """No KV cache, and only the last position's logits where the model can skip the rest."""
    params = inspect.signature(model.forward).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    if "use_cache" in params or open_kwargs:
        kwargs["use_cache"] = False
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


@dataclass
class RowRecording:
    """One prompt's recorders, buffers and hooks, set up before the forward that fills them (a
    prompt alone, or one row of capture_batch's batched forward)."""
    plan: CapturePlan
    offload: Offloader
    store: AttentionStore
    recorder: Recorder
    session: HookSession
    components: ComponentsRecorder | None
    registrations: list[tuple[nn.Module, str, Callable]]


def start_recording(model: nn.Module, plan: CapturePlan, options: CaptureOptions,
                    device: torch.device) -> RowRecording:
    """Everything that records one prompt; nothing runs yet. `device`: where its input ids go."""
    offload = Offloader(to_cpu=options.offload_to_cpu)
    store = AttentionStore(num_heads=plan.shape.heads, num_kv_heads=plan.shape.kv_heads)
    layer_of = {}
    for lp in plan.anatomy.layers:
        module = resolve(model, lp.attention)
        if module is not None:
            layer_of[id(module)] = lp.index
    on_device = {layer for layer, p in plan.placement.items() if p.where == "gpu"}
    recorder = Recorder(store, layer_of, set(plan.attention_layers), offload, on_device)
    session = HookSession(recorder, offload, plan.keep if "residual" in plan.parts else [], options.residual_dtype)
    shape, t = plan.shape, int(plan.ids.shape[0])
    comps, comps_note = (start_components(model, plan.anatomy, recorder, offload, plan.budget,
                                          (shape.layers, t, shape.hidden, shape.heads, shape.kv_heads,
                                           shape.head_dim, plan.act_bytes), device,
                                          options.components_on_device)
                         if "components" in plan.parts else (None, None))
    plan.notes += [comps_note] if comps_note else []
    registrations = _registrations(model, plan, session) + (comps.registrations() if comps is not None else [])
    return RowRecording(plan, offload, store, recorder, session, comps, registrations)


def run_forward(model: nn.Module, plan: CapturePlan, options: CaptureOptions) -> Recorded:
    """The one forward: hooks on, the recording attention function switched in, both undone after."""
    input_ids = plan.ids[None].to(input_device(model))                                   # (1, T)
    row = start_recording(model, plan, options, input_ids.device)
    want_attention = bool(plan.attention_layers)
    shape, t = plan.shape, int(plan.ids.shape[0])
    switch = explorer_attention_enabled(model) if want_attention else contextlib.nullcontext(False)
    fallback = plan_fallback(model, want_attention, (shape.layers, shape.heads, t, plan.act_bytes), plan.budget)
    with (torch.inference_mode(), forward_hooks(row.registrations), switch as switched,
          recording(row.recorder), fallback.running(model)):
        output = model(input_ids=input_ids, **forward_kwargs(model), **fallback.kwargs)
        row.offload.finish()
    return Recorded(row.session, row.store, output, bool(switched), row.components, fallback, row.offload)


# --------------------------------------------------------------------------------------------
# Step 3: assemble
# --------------------------------------------------------------------------------------------

def _last_logits(output: Any) -> torch.Tensor | None:
    """(V,) float32 logits at the last position, from a model output or a bare (1, T, V) tensor."""
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, torch.Tensor) and output.dim() == 3:
        logits = output
    return logits[0, -1].float().cpu() if logits is not None else None


def _small_statistics(model: nn.Module, session: HookSession, n_layers: int
                      ) -> tuple[dict[str, NormStats], torch.Tensor | None, torch.Tensor | None]:
    """Norm statistics (with each norm's learned weight) and the (L, T) attention / MLP output
    norms, brought to CPU in one transfer per group."""
    small: dict[tuple, torch.Tensor] = {}
    for name, (x_norm, y_mean, y_norm) in session.norm_stats.items():
        small[("x", name)], small[("mean", name)], small[("y", name)] = x_norm, y_mean, y_norm
        weight = getattr(resolve(model, name), "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 1:
            small[("weight", name)] = weight.detach()
    small.update({("attn", i): t for i, t in session.attn_norm.items()})
    small.update({("mlp", i): t for i, t in session.mlp_norm.items()})
    host = gather_small(small)
    norms = {}
    for name in session.norm_stats:
        rms, mean, std = norm_stats_from_raw(host[("x", name)], host[("mean", name)], host[("y", name)],
                                             session.norm_dims[name])
        weight = host.get(("weight", name))
        norms[name] = NormStats(rms, mean, std, weight.float().clone() if weight is not None else None)

    def per_layer(kind: str) -> torch.Tensor | None:          # (L, T) when every layer reported
        if not all((kind, i) in host for i in range(n_layers)):
            return None
        return torch.stack([host[(kind, i)] for i in range(n_layers)])
    return norms, per_layer("attn"), per_layer("mlp")


def _token_strings(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return [str(s) for s in tokenizer.convert_ids_to_tokens(ids.tolist())]


def _token_texts(tokenizer, ids: torch.Tensor) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return [token_text(tokenizer, i) for i in ids.tolist()]


def assemble(model: nn.Module, tokenizer, plan: CapturePlan, recorded: Recorded,
             options: CaptureOptions) -> Capture:
    """Gather what the forward kept into a Capture that holds no reference to the model."""
    session, store, shape = recorded.session, recorded.store, plan.shape
    notes = list(plan.notes)
    if recorded.fallback is not None and recorded.fallback.note:
        notes.append(recorded.fallback.note)
    if recorded.fallback is not None and recorded.fallback.active:
        store = store_from_output(recorded.output, set(plan.attention_layers), shape.heads, shape.kv_heads) or store
    _settle_placement(store, plan, recorded.switched, notes)
    norms, attn_out_norm, mlp_out_norm = _small_statistics(model, session, shape.layers)
    residual_layers = [layer for layer in session.keep if layer in session.filled]
    residual = session.residual                                       # (len(keep), T, d)
    if residual is not None and len(residual_layers) < len(session.keep):
        residual = residual[[session.slot[layer] for layer in residual_layers]]
    last_logits = _last_logits(recorded.output) if "logits" in plan.parts else None
    groups = max(1, shape.heads // max(1, shape.kv_heads))
    config = getattr(model, "config", None)
    token_texts = _token_texts(tokenizer, plan.ids)
    vocab = {int(i): s for i, s in zip(plan.ids.tolist(), token_texts)} if tokenizer is not None else {}
    if tokenizer is not None and last_logits is not None:          # the top next tokens' texts, for the views
        for i in last_logits.topk(min(options.top_logits, last_logits.numel())).indices.tolist():
            if int(i) not in vocab:
                vocab[int(i)] = token_text(tokenizer, i)
    cap = Capture(
        model_name=options.model_name or str(getattr(config, "_name_or_path", "") or type(model).__name__),
        token_ids=plan.ids, tokens=_token_strings(tokenizer, plan.ids), token_texts=token_texts,
        embeddings=session.embeddings, residual=residual, residual_layers=residual_layers, norms=norms,
        attn_out_norm=attn_out_norm, mlp_out_norm=mlp_out_norm, last_logits=last_logits,
        attention=store if store.layers else None,
        num_layers=shape.layers, num_heads=shape.heads, num_kv_heads=shape.kv_heads, hidden_size=shape.hidden,
        kv_head_of=[h // groups for h in range(shape.heads)], anatomy=plan.anatomy, notes=notes,
        precision=options.precision,
        vocab=vocab,
    )
    if recorded.components is not None and _last_logits(recorded.output) is not None:
        cap.components = recorded.components.assemble(plan.ids, _last_logits(recorded.output), cap.kv_head_of,
                                                       final_softcap=getattr(config, "final_logit_softcapping", None))
    if recorded.offload is not None:
        recorded.offload.lease(cap)           # pooled host buffers go back when this capture is collected
    return cap


def _settle_placement(store: AttentionStore, plan: CapturePlan, switched: bool, notes: list[str]) -> None:
    """The store's placement: as planned for layers that arrived, dropped (with why) for the rest."""
    placement = dict(plan.placement)
    for layer in plan.attention_layers:
        if layer in store.layers:
            placement[layer] = Placement("gpu" if store.on_gpu(layer) else "host")
        else:
            why = ("the model did not run this layer's attention through the recording function" if switched
                   else "this model cannot record attention (see the other notes)")
            placement[layer] = Placement("dropped", why)
    store.placement = placement
    if any(p.where == "dropped" for p in placement.values()):
        notes.append(store.placement_summary())


def capture(model: nn.Module, tokenizer, prompt: Prompt, options: CaptureOptions | None = None) -> Capture:
    """Run `prompt` once through `model` and return what every view needs, as plain data.

    prompt: text, chat messages ([{"role": ..., "content": ...}]), or token ids.
    Raises PromptTooLongError when the prompt exceeds the model's context window.
    """
    options = options or CaptureOptions()
    plan = plan_capture(model, tokenizer, prompt, options)
    recorded = run_forward(model, plan, options)
    return assemble(model, tokenizer, plan, recorded, options)


__all__ = ["DEFAULT_PARTS", "PARTS", "Capture", "CaptureOptions", "NormStats", "PromptTooLongError", "Recorded",
           "RowRecording", "assemble", "capture", "forward_hooks", "forward_kwargs", "run_forward", "start_recording"]
