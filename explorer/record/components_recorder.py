"""Recording the "components" capture part during the one forward (see record/components.py).

Why stacked buffers: at 4096 tokens on an 8B model the part is ~3.4 GB of activations. Each kind
(residuals, z, MLP outputs, values) goes into one (layers, ...) buffer allocated at its first
write and filled layer by layer, so nothing is stacked again afterwards. Nothing in a hook reads
a value back to the host either: a read waits for the GPU and would stall the forward at every
layer.

Why on the GPU when it fits: measured on an H200 (bench/results/routes_cuda.md), the copy to
the host runs at ~23 GB/s and fresh pinned memory costs ~0.6 s per GB to allocate, so a host
record takes 1.7-2× a plain forward where a device record takes about the forward alone. The
analyses then run on the GPU too (explorer/analyse/attribution.py, routes.py).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from explorer.model.anatomy import Anatomy, resolve
from explorer.model.units import fmt_bytes
from explorer.record.attention_fn import active_recorder
from explorer.record.components import Components, NormLinear
from explorer.record.offload import Offloader, gather_small
from explorer.record.weights import dense_weight, find_output_projection, first_output, fit_scale, out_features, output_slices, probed_norm

_KINDS = ("resid", "z", "mlp", "values")


def components_bytes(n_layers: int, t: int, hidden: int, n_heads: int, n_kv: int, head_dim: int,
                     act_bytes: int) -> int:
    """What a components record holds: residual, z, MLP and values per layer (W_o, shared by a
    model's captures and kept on the host, is not counted)."""
    per_layer = t * (2 * hidden + n_heads * head_dim + n_kv * head_dim) * act_bytes
    return n_layers * per_layer + t * hidden * act_bytes


def _residual_reader(module: nn.Module) -> Callable | None:
    """For a block whose forward takes a `residual` argument (and adds it to its output), a
    function (args, kwargs) -> that argument; None for the usual blocks."""
    try:
        params = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    if "residual" not in params:
        return None
    at = params.index("residual")

    def read(args, kwargs):
        value = kwargs.get("residual", args[at] if at < len(args) else None)
        return value if isinstance(value, torch.Tensor) else None
    return read


class ComponentsRecorder:
    """Hook bodies for one capture's components. `mine()` tells whether the running forward
    belongs to this capture; `offload` (an Offloader) allocates the buffers and fills them."""

    def __init__(self, model: nn.Module, anatomy: Anatomy, n_heads: int, hidden: int,
                 mine: Callable[[], bool], offload) -> None:
        self.model, self.anatomy, self.n_heads, self.hidden = model, anatomy, n_heads, hidden
        self.mine, self.offload = mine, offload
        self.n = len(anatomy.layers)
        self.buffers: dict[str, torch.Tensor] = {}     # resid (L+1, T, d), z (L, T, H·hd), mlp (L, T, d), values (L, KV, T, hd)
        self.filled: dict[str, set[int]] = {k: set() for k in _KINDS}
        self.problem: str | None = None
        self.post_attn: dict[int, NormLinear] = {}     # scales still on the device until assemble
        self.final: NormLinear | None = None
        self.final_out: torch.Tensor | None = None     # (T, d) on the device, for predictions
        self._live: dict[int, dict[str, torch.Tensor]] = {}  # per layer: attn/mlp outputs during its forward
        self._norms: dict[str, nn.Module] = {}
        self.o_proj: list[nn.Module | None] = []
        self._attn_layer: dict[int, int] = {}

    def registrations(self) -> list[tuple[nn.Module, str, Callable]]:
        regs: list[tuple[nn.Module, str, Callable]] = []
        for lp in self.anatomy.layers:
            layer = resolve(self.model, lp.name)
            attn = resolve(self.model, lp.attention)
            mlp = resolve(self.model, lp.mlp)
            proj_name = find_output_projection(attn, self.hidden) if attn is not None else None
            proj = attn.get_submodule(proj_name) if proj_name else None
            self.o_proj.append(proj)
            if attn is not None:
                self._attn_layer[id(attn)] = lp.index
            if lp.index == 0:
                regs.append((layer, "pre", self._layer_input))
            regs.append((layer, "post", self._layer_output(lp.index)))
            if proj is not None:
                regs.append((proj, "pre", self._z_hook(lp.index)))
            for module, key in ((attn, "attn"), (mlp, "mlp")):
                if module is not None:
                    regs.append((module, "post_kw", self._block_output(lp.index, key, _residual_reader(module))))
            for name in lp.norms:
                self._probe(name)                                           # before any hook is on it
                regs.append((resolve(self.model, name), "post", self._layer_norm(lp.index, name)))
        if resolve(self.model, self.anatomy.final_norm) is not None:
            self._probe(self.anatomy.final_norm)
            regs.append((resolve(self.model, self.anatomy.final_norm), "post", self._final_norm))
        return regs

    def _probe(self, name: str) -> None:
        norm = resolve(self.model, name)
        param = next((p for p in norm.parameters() if p.is_floating_point()), None)
        device = param.device if param is not None else torch.device("cpu")
        probed_norm(norm, self.hidden, device)            # cached per module, its gain already on `device`
        self._norms[name] = norm

    def _norm(self, name: str, device: torch.device):
        return probed_norm(self._norms[name], self.hidden, device)

    def _put(self, kind: str, index: int, t: torch.Tensor, snapshot: bool = False) -> None:
        """Copy one layer's tensor into the kind's stacked buffer (allocated at the first write).
        snapshot: the model may still change `t` in place, so an asynchronous copy (side stream)
        must read a private copy of it."""
        buf = self.buffers.get(kind)
        if buf is None:
            rows = self.n + 1 if kind == "resid" else self.n
            buf = self.buffers[kind] = self.offload.new_buffer((rows, *t.shape), t.dtype, t.device)
        if tuple(buf.shape[1:]) != tuple(t.shape):
            self.problem = f"layer {index}'s {kind} has shape {tuple(t.shape)}, not {tuple(buf.shape[1:])}"
            return
        if snapshot and t.device.type == "cuda" and buf.device != t.device:
            t = t.clone()
        self.offload.copy_into(buf[index], t)
        self.filled[kind].add(index)

    # ---- hooks ------------------------------------------------------------------------------
    def _layer_input(self, module, args, kwargs=None):
        if self.mine():
            hidden = args[0] if args else (kwargs or {}).get("hidden_states")
            self._put("resid", 0, hidden[0])

    def _layer_output(self, index: int):
        def hook(module, args, output):
            if not self.mine():
                return
            self._live.pop(index, None)
            self._put("resid", index + 1, first_output(output)[0])
        return hook

    def _z_hook(self, index: int):
        def hook(module, args, kwargs=None):
            if self.mine():
                z = args[0] if args else (kwargs or {}).get("input")
                self._put("z", index, z[0])                                  # (T, H·hd)
        return hook

    def _block_output(self, index: int, key: str, residual_of: Callable | None):
        """The attention's or MLP's output. Blocks that add the residual themselves (BLOOM, MPT:
        a `residual` argument) give their output minus it; the MLP's share is copied at once,
        since some layers add into it in place afterwards (Falcon's parallel blocks)."""
        def hook(module, args, kwargs, output):
            if not self.mine():
                return
            out = first_output(output)[0]                                    # (T, d)
            residual = residual_of(args, kwargs) if residual_of is not None else None
            if key == "mlp":
                self._put("mlp", index, out - residual[0] if residual is not None else out, snapshot=True)
            if residual is None:                 # a norm reading this output is the block's own post-norm
                self._live.setdefault(index, {})[key] = out                  # until the layer ends
        return hook

    def _layer_norm(self, index: int, name: str):
        def hook(module, args, output):
            if not self.mine() or not args:
                return
            live = self._live.get(index, {})
            x, y = args[0][0], first_output(output)[0]
            if "attn" in live and x.data_ptr() == live["attn"].data_ptr():
                gain, bias, center = self._norm(name, x.device)
                self.post_attn[index] = NormLinear(fit_scale(x, y, gain, bias, center), gain, bias, center)
            elif "mlp" in live and x.data_ptr() == live["mlp"].data_ptr():
                self._put("mlp", index, y, snapshot=True)                     # the MLP's share is the norm's output
        return hook

    def _final_norm(self, module, args, output):
        if self.mine() and args:
            x, y = args[0][0], first_output(output)[0]
            gain, bias, center = self._norm(self.anatomy.final_norm, x.device)
            self.final = NormLinear(fit_scale(x, y, gain, bias, center), gain, bias, center)
            self.final_out = y

    def value_hook(self, module: nn.Module, value: torch.Tensor) -> None:
        """Called by the attention function with (B, KV, T, hd) values."""
        layer = self._attn_layer.get(id(module), getattr(module, "layer_idx", None))
        if layer is not None and self.mine():
            self._put("values", layer, value[0])

    # ---- after the forward (and Offloader.finish) ---------------------------------------------
    @torch.inference_mode()
    def assemble(self, token_ids: torch.Tensor, last_logits: torch.Tensor | None, kv_head_of: list[int],
                 extra_tokens: list[int] | None = None, final_softcap: float | None = None) -> Components | None:
        n = self.n
        complete = (len(self.filled["resid"]) == n + 1 and len(self.filled["z"]) == n
                    and len(self.filled["mlp"]) == n and all(p is not None for p in self.o_proj))
        if self.problem or not complete:
            return None
        zbuf = self.buffers["z"]
        z = zbuf.view(n, zbuf.shape[1], self.n_heads, -1)                    # (L, T, H, hd)
        home = z.device
        w_o, b_o = output_slices(self.model, self.o_proj, self.n_heads, z.dtype, home)
        values = self.buffers["values"] if len(self.filled["values"]) == n else None
        predicted, ids, rows, bias = self._unembedding(token_ids, last_logits, extra_tokens or [], home)
        post_attn, final = self._norms_at(home)
        notes = [] if values is not None else ["attention values were not recorded: routes need the "
                                               "attention interface"]
        return Components(
            resid=self.buffers["resid"], z=z, w_o=w_o, b_o=b_o, mlp=self.buffers["mlp"], values=values,
            attn_post_norm=post_attn, final_norm=final, unembed_ids=ids, unembed_rows=rows, unembed_bias=bias,
            predicted=predicted, kv_head_of=list(kv_head_of), final_softcap=final_softcap, notes=notes)

    def _norms_at(self, home: torch.device) -> tuple[list[NormLinear | None], NormLinear | None]:
        """The linearised norms with every tensor at `home`, the per-token scales in one transfer."""
        scales = {i: norm.scale for i, norm in self.post_attn.items()}
        if self.final is not None:
            scales["final"] = self.final.scale
        moved = {k: v.to(home) for k, v in gather_small(scales).items()} if home.type == "cpu" else scales

        def at_home(key, norm: NormLinear) -> NormLinear:
            bias = norm.bias.to(home) if norm.bias is not None else None
            return NormLinear(moved[key].to(home), norm.gain.to(home), bias, norm.center)
        post = [at_home(i, self.post_attn[i]) if i in self.post_attn else None for i in range(self.n)]
        return post, (at_home("final", self.final) if self.final is not None else None)

    def _unembedding(self, token_ids: torch.Tensor, last_logits: torch.Tensor | None, extra: list[int],
                     home: torch.device):
        """Top prediction at every position (blocks through the LM head) and the LM-head rows of
        the tokens attribution may target: predictions, actual next tokens, top-20 at the end."""
        head = resolve(self.model, self.anatomy.lm_head)
        t = int(token_ids.shape[0])
        predicted = torch.zeros(t, dtype=torch.long)
        if head is not None and self.final_out is not None:
            vocab = out_features(head) or 1
            rows = max(1, (1 << 26) // vocab)                     # ≤ 64 Mi logits per block
            project = head
            if self.final_out.device.type == "cpu" and self.final_out.dtype != torch.float32:
                # CPU half-precision matmuls have no fast kernels: one float32 copy of the head is far cheaper
                weight, bias = dense_weight(head), getattr(head, "bias", None)
                bias = bias.detach().float() if isinstance(bias, torch.Tensor) else None
                project = lambda x: nn.functional.linear(x.float(), weight, bias)  # noqa: E731 - replaces the head in one branch
            blocks = [project(self.final_out[r0: r0 + rows]).argmax(-1) for r0 in range(0, t, rows)]
            predicted = torch.cat(blocks).cpu()                   # one read back, after the forward
        wanted = set(predicted.tolist()) | set(token_ids[1:].tolist()) | {int(i) for i in extra}
        if last_logits is not None:
            wanted |= set(last_logits.topk(min(20, last_logits.numel())).indices.tolist())
        ids = torch.tensor(sorted(wanted), dtype=torch.long)
        self.final_out = None
        if head is None:
            return predicted, ids[:0], torch.zeros(0, self.hidden), None
        weight = head.weight
        if getattr(weight, "quant_state", None) is not None or getattr(weight, "SCB", None) is not None:
            rows_t = dense_weight(head)[ids.to(weight.device)].to(home)
        else:
            rows_t = weight.detach()[ids.to(weight.device)].float().to(home)
        b = getattr(head, "bias", None)
        bias = b.detach()[ids.to(b.device)].float().to(home) if isinstance(b, torch.Tensor) else None
        return predicted, ids, rows_t, bias


def keep_on_device(device: torch.device, need: int, wanted: bool | None) -> bool:
    """Whether the activations stay on `device`: asked for (True/False), or by default on a CUDA
    device when they take at most half of its free memory."""
    if device.type != "cuda" or wanted is False:
        return False
    if wanted:
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return need <= free // 2


def start_components(model: nn.Module, anatomy: Anatomy, recorder, offload, budget: int,
                     sizes: tuple[int, int, int, int, int, int, int], device: torch.device,
                     on_device: bool | None = None) -> tuple[ComponentsRecorder | None, str | None]:
    """A recorder wired to `recorder` (the attention function hands it the values), or a note
    saying why components are left out. sizes = (layers, T, hidden, heads, kv heads, head dim,
    bytes per activation); `device` is where the forward starts, `on_device` the capture option."""
    n_layers, t, hidden, n_heads, n_kv, head_dim, act_bytes = sizes
    need = components_bytes(n_layers, t, hidden, n_heads, n_kv, head_dim, act_bytes)
    if need > budget:      # checked on the device too: they move to the host when first read
        return None, (f"components left out: they need {fmt_bytes(need)}, over the memory budget "
                      f"of {fmt_bytes(budget)}")
    if keep_on_device(device, need, on_device):
        offload = Offloader(to_cpu=False)
    comps = ComponentsRecorder(model, anatomy, n_heads, hidden, lambda: active_recorder() is recorder, offload)
    recorder.on_value = comps.value_hook
    return comps, None


__all__ = ["ComponentsRecorder", "components_bytes", "start_components"]
