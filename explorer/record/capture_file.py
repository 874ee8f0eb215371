"""Save a Capture to one safetensors file (tensors + JSON metadata) and open it without the model.

Why safetensors: no pickle (opening a file cannot run code), memory-mappable, and readable from
other tools. Everything that is not a tensor travels as JSON in the file's metadata.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from explorer.model import read_limits
from explorer.model.anatomy import Anatomy, LayerParts
from explorer.model.checks import read_safetensors_header
from explorer.model.errors import BadWeights, CaptureFileError
from explorer.model.safe_write import write_via_temp
from explorer.record.attention_store import AttentionStore, LayerAttention
from explorer.record.capture_data import Capture, NormStats
from explorer.record.capture_schema import FORMAT, VERSION, check_header, check_tensors
from explorer.record.components import components_from_file, components_to_file
from explorer.record.eager_fallback import StoredAttention

META_KEY = "explorer_capture"
EXTRA_META = ("vocab", "summary_layers", "lens")   # metadata keys the derived results may set


@dataclass
class Extras:
    """Tensors and metadata saved beside the capture's own: the derived results (head summaries,
    logit lens, token texts). Why opaque here: they are computed and typed above record
    (explorer.analyse.derived), so explorer.analyse.capture_bundle lays them out and reads them
    back; this module only carries them, and capture_schema validates the whole file."""
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def _pack_mask(mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Bool mask -> uint8 bits (8× smaller), with the shape needed to unpack."""
    shape = list(mask.shape)
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    packed = (flat.view(-1, 8) * weights).sum(-1, dtype=torch.int32).to(torch.uint8)
    return packed, shape


def _unpack_mask(packed: torch.Tensor, shape: list[int]) -> torch.Tensor:
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    bits = (packed[:, None] & weights) != 0
    n = 1
    for s in shape:
        n *= s
    return bits.reshape(-1)[:n].reshape(shape)


def save_capture(capture: Capture, path: str | Path, include_attention: bool = True,
                 extras: Extras | None = None) -> None:
    """Write `capture` to `path`, and `extras` (derived results, see Extras) when given.
    include_attention=False drops Q/K (the largest part); summaries in `extras` stay."""
    tensors: dict[str, torch.Tensor] = {"token_ids": capture.token_ids}
    for name in ("embeddings", "residual", "attn_out_norm", "mlp_out_norm", "last_logits"):
        value = getattr(capture, name)
        if value is not None:
            tensors[name] = value
    norm_names = list(capture.norms)
    for i, name in enumerate(norm_names):
        stats = capture.norms[name]
        tensors[f"norm.{i}.input_rms"] = stats.input_rms
        tensors[f"norm.{i}.output_mean"] = stats.output_mean
        tensors[f"norm.{i}.output_std"] = stats.output_std
        if stats.weight is not None:
            tensors[f"norm.{i}.weight"] = stats.weight
    attention_meta = None
    store = capture.attention
    if include_attention and store is not None:
        layers_meta = {}
        for layer, rec in store.layers.items():
            if isinstance(store, StoredAttention):                  # eager fallback: the maps themselves
                tensors[f"attn.{layer}.maps"] = store.maps[layer]
            else:
                tensors[f"attn.{layer}.q"] = rec.q
                tensors[f"attn.{layer}.k"] = rec.k
            meta = dataclasses.asdict(dataclasses.replace(rec, q=None, k=None))
            del meta["q"], meta["k"]
            layers_meta[str(layer)] = meta
        mask_shapes = []
        for i, mask in enumerate(store.masks):
            packed, shape = _pack_mask(mask.cpu())
            tensors[f"attn.mask.{i}"] = packed
            mask_shapes.append(shape)
        attention_meta = {"num_heads": store.num_heads, "num_kv_heads": store.num_kv_heads,
                          "layers": layers_meta, "mask_shapes": mask_shapes, "placement": store.placement_meta()}
    comp_tensors, comp_meta = components_to_file(capture.components) if capture.components else ({}, None)
    tensors.update(comp_tensors)
    meta = {
        "format": FORMAT, "version": VERSION,
        "model_name": capture.model_name, "precision": capture.precision,
        "tokens": capture.tokens, "token_texts": capture.token_texts,
        "residual_layers": capture.residual_layers,
        "norm_names": norm_names,
        "num_layers": capture.num_layers, "num_heads": capture.num_heads,
        "num_kv_heads": capture.num_kv_heads, "hidden_size": capture.hidden_size,
        "kv_head_of": capture.kv_head_of,
        "anatomy": dataclasses.asdict(capture.anatomy),
        "notes": capture.notes,
        "vocab": {str(k): v for k, v in capture.vocab.items()},
        "attention": attention_meta,
        "summary_layers": None,
        "lens": {},
        "components": comp_meta,
    }
    if extras is not None:
        unknown = set(extras.meta) - set(EXTRA_META)
        if unknown:
            raise ValueError(f"extras may only set {EXTRA_META}, not {sorted(unknown)}")
        meta.update(extras.meta)
        tensors.update(extras.tensors)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    write_via_temp(path, lambda tmp: save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)}))


def _read_checked(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The metadata and tensor shapes, validated against the schema; no tensor is read yet."""
    name = path.name
    try:
        header = read_safetensors_header(path)
    except BadWeights as exc:
        rest = str(exc).removeprefix(name + " ").rstrip(".")
        raise CaptureFileError(f"{name} is not a valid capture file: it {rest}.") from None
    except OSError as exc:
        raise CaptureFileError(f"Cannot read {name}: {exc.strerror or type(exc).__name__}.") from None
    raw = (header.get("__metadata__") or {}).get(META_KEY) if isinstance(header.get("__metadata__"), dict) else None
    if raw is None:
        raise CaptureFileError(f"{name} is not an LLM Explorer capture (no '{META_KEY}' metadata).")
    if not isinstance(raw, str):
        raise CaptureFileError(f"{name} is not a valid capture file: its metadata is not text.")
    meta = read_limits.loads(raw, "its metadata", _invalid(name), limit=read_limits.CAPTURE_META_MAX)
    check_header(meta, name)
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    shapes = {k: tuple(v["shape"]) for k, v in entries.items()}
    check_tensors(meta, shapes, name, {k: v["dtype"] for k, v in entries.items()})
    return meta, shapes


def _invalid(name: str):
    return lambda problem: CaptureFileError(f"{name} is not a valid capture file: {problem[0].lower()}{problem[1:]}")


def open_capture(path: str | Path) -> Capture:
    """Read the capture of a file written by save_capture (derived results saved with it:
    explorer.analyse.capture_bundle.open_with_results). No model is needed. Any file that is not
    a valid capture raises CaptureFileError with one sentence, the same one the CLI `show` prints."""
    return open_capture_with_extras(path)[0]


def open_capture_with_extras(path: str | Path) -> tuple[Capture, Extras]:
    """The capture and the Extras saved beside it (raw tensors and metadata, already validated)."""
    path = Path(path)
    meta, _ = _read_checked(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on damage
        raise CaptureFileError(f"{path.name} is not a valid capture file: its tensors cannot be read "
                               f"({type(exc).__name__}).") from None
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise CaptureFileError(f"{path.name} is not a valid capture file: {', '.join(bad[:3])} "
                               "hold NaN or infinite values.")
    try:
        cap = _build(meta, tensors)
    except Exception as exc:  # noqa: BLE001 - the schema should have caught it; never a traceback
        raise CaptureFileError(f"{path.name} is not a valid capture file: {type(exc).__name__} while reading "
                               "it.") from None
    derived = {k: t for k, t in tensors.items() if k.startswith(("summary.", "lens."))}
    return cap, Extras(derived, {k: meta[k] for k in EXTRA_META if k in meta})


def _build(meta: dict, tensors: dict[str, torch.Tensor]) -> Capture:
    get = tensors.get
    norms = {}
    for i, name in enumerate(meta["norm_names"]):
        norms[name] = NormStats(get(f"norm.{i}.input_rms"), get(f"norm.{i}.output_mean"),
                                get(f"norm.{i}.output_std"), get(f"norm.{i}.weight"))
    store = None
    am = meta.get("attention")
    if am:
        masks = [_unpack_mask(get(f"attn.mask.{i}"), shape) for i, shape in enumerate(am["mask_shapes"])]
        stored = any(k.endswith(".maps") for k in tensors)
        store = (StoredAttention if stored else AttentionStore)(num_heads=am["num_heads"],
                                                                num_kv_heads=am["num_kv_heads"], masks=masks)
        for layer, lm in am["layers"].items():
            if stored:          # files written before StoredAttention held no Q/K carry empty ones: dropped
                store.layers[int(layer)] = LayerAttention(q=None, k=None, **lm)
                store.maps[int(layer)] = get(f"attn.{layer}.maps")
            else:
                store.layers[int(layer)] = LayerAttention(q=get(f"attn.{layer}.q"), k=get(f"attn.{layer}.k"), **lm)
        store.restore_placement(am.get("placement"))
    a = meta["anatomy"]
    anatomy = Anatomy(**{**a, "layers": [LayerParts(**lp) for lp in a["layers"]]})
    cap = Capture(
        model_name=meta["model_name"], token_ids=get("token_ids"), tokens=meta["tokens"],
        token_texts=meta["token_texts"], embeddings=get("embeddings"), residual=get("residual"),
        residual_layers=meta["residual_layers"], norms=norms, attn_out_norm=get("attn_out_norm"),
        mlp_out_norm=get("mlp_out_norm"), last_logits=get("last_logits"), attention=store,
        num_layers=meta["num_layers"], num_heads=meta["num_heads"], num_kv_heads=meta["num_kv_heads"],
        hidden_size=meta["hidden_size"], kv_head_of=meta["kv_head_of"], anatomy=anatomy,
        notes=meta["notes"], vocab={int(k): v for k, v in meta["vocab"].items()},
        precision=meta.get("precision"),   # absent in files written before it was saved
    )
    if meta.get("components"):
        cap.components = components_from_file(get, meta["components"])
    return cap


__all__ = ["Extras", "open_capture", "open_capture_with_extras", "save_capture"]
