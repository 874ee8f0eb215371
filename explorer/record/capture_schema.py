"""The versioned schema of a capture file, checked before anything is built from it.

Why: a capture file can come from anywhere (a colleague, a download, a damaged disk). Checking
the metadata's keys and types, the tensor names and the shapes that must agree, before a single
dataclass is built, turns every malformed file into one sentence instead of a KeyError or an
AttributeError deep inside the views. The CLI `show` and `open_capture` both go through here, so
they say the same thing.
"""
from __future__ import annotations

import dataclasses
import math
import re

from explorer.model.anatomy import Anatomy, LayerParts
from explorer.model.errors import CaptureFileError

FORMAT = "llm-explorer-capture"
VERSION = 1

_INT, _STR, _LIST, _DICT = int, str, list, dict
# key -> (type, required); None allowed where the saver writes None
META_V1: dict[str, tuple[type, bool, bool]] = {
    "format": (_STR, True, False), "version": (_INT, True, False), "model_name": (_STR, True, True),
    "tokens": (_LIST, True, False), "token_texts": (_LIST, True, False), "residual_layers": (_LIST, True, False),
    "norm_names": (_LIST, True, False), "num_layers": (_INT, True, False), "num_heads": (_INT, True, False),
    "num_kv_heads": (_INT, True, False), "hidden_size": (_INT, True, False), "kv_head_of": (_LIST, True, False),
    "anatomy": (_DICT, True, False), "notes": (_LIST, True, False), "vocab": (_DICT, True, False),
    "attention": (_DICT, False, True), "summary_layers": (_LIST, False, True), "lens": (_DICT, False, False),
    "precision": (_STR, False, True), "components": (_DICT, False, True),
}
_TENSOR_NAMES = re.compile(
    r"^(token_ids|embeddings|residual|attn_out_norm|mlp_out_norm|last_logits"
    r"|norm\.\d+\.(input_rms|output_mean|output_std|weight)|attn\.\d+\.[qk]|attn\.mask\.\d+"
    r"|summary\.(entropy|first_token|lookback)|lens\.\d+\.(token_ids|probs)|attn\.\d+\.maps"
    r"|comp\.(resid|z|w_o|b_o|mlp|values|unembed_ids|unembed_rows|unembed_bias|predicted)"
    r"|comp\.norm\.(final|\d+)\.(scale|gain|bias))$")
MAX_ELEMENTS = 2**34  # a declared size beyond this is a corrupt or hostile header
_LAYER_FIELDS = {"mask", "causal", "scaling", "softcap", "sliding_window", "device"}


class _Check:
    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, problem: str) -> None:
        raise CaptureFileError(f"{self.name} is not a valid capture file: {problem}.")

    def that(self, ok: bool, problem: str) -> None:
        if not ok:
            self.fail(problem)


def check_header(meta: object, name: str) -> dict:
    """The format, version and metadata keys/types (schema v1)."""
    c = _Check(name)
    c.that(isinstance(meta, dict), "its metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        c.fail(f"its format is {meta.get('format')!r}, not {FORMAT!r}")
    version = meta.get("version")
    c.that(isinstance(version, int) and not isinstance(version, bool) and version >= 1,
           f"its version {version!r} is not a format version")
    if version > VERSION:
        raise CaptureFileError(f"{name} was written by a newer version of LLM Explorer (format {version}; this "
                               f"version reads up to {VERSION}). Update to open it.")
    unknown = sorted(set(meta) - set(META_V1))
    c.that(not unknown, f"unknown metadata keys {unknown[:5]}")
    for key, (kind, required, nullable) in META_V1.items():
        if key not in meta:
            c.that(not required, f"the metadata lacks {key!r}")
            continue
        value = meta[key]
        if value is None:
            c.that(nullable, f"{key!r} is empty")
            continue
        c.that(isinstance(value, kind) and not (kind is int and isinstance(value, bool)),
               f"{key!r} should be a {kind.__name__}, not {type(value).__name__}")
    for key in ("num_layers", "num_heads", "num_kv_heads", "hidden_size"):
        c.that(meta[key] >= 1, f"{key!r} is {meta[key]}")
    c.that(all(isinstance(t, str) for t in meta["tokens"] + meta["token_texts"] + meta["norm_names"]
               + meta["notes"]), "tokens, token texts, norm names and notes must be strings")
    c.that(len(meta["tokens"]) == len(meta["token_texts"]) >= 1,
           f"{len(meta['tokens'])} tokens but {len(meta['token_texts'])} token texts")
    ints = meta["residual_layers"] + meta["kv_head_of"] + (meta.get("summary_layers") or [])
    c.that(all(isinstance(i, int) and 0 <= i < 1 << 20 for i in ints), "layer and head indices must be integers")
    c.that(all(l < meta["num_layers"] for l in meta["residual_layers"]), "a residual layer is out of range")
    c.that(len(meta["kv_head_of"]) == meta["num_heads"], "kv_head_of does not list one KV head per head")
    c.that(all(isinstance(v, str) for v in meta["vocab"].values()) and all(k.lstrip("-").isdigit() for k in meta["vocab"]),
           "the vocabulary must map token ids to strings")
    _check_anatomy(c, meta["anatomy"])
    return meta


def _check_anatomy(c: _Check, a: dict) -> None:
    fields = {f.name for f in dataclasses.fields(Anatomy)}
    layer_fields = {f.name for f in dataclasses.fields(LayerParts)}
    c.that(set(a) <= fields, f"unknown anatomy keys {sorted(set(a) - fields)[:5]}")
    c.that({"embed_tokens", "embed_positions", "layers_path", "layers", "final_norm", "lm_head"} <= set(a),
           "the anatomy is incomplete")
    c.that(isinstance(a["layers"], list) and all(isinstance(lp, dict) and set(lp) <= layer_fields
                                                 and {"index", "name", "attention", "mlp"} <= set(lp)
                                                 for lp in a["layers"]), "the anatomy's layers are malformed")


def check_tensors(meta: dict, shapes: dict[str, tuple[int, ...]], name: str,
                  dtypes: dict[str, str] | None = None) -> None:
    """Tensor names known, sizes sane, dtypes right, and the shapes that must agree with the metadata do."""
    c = _Check(name)
    unknown = sorted(k for k in shapes if not _TENSOR_NAMES.match(k))
    c.that(not unknown, f"unknown tensors {unknown[:5]}")
    if dtypes is not None:
        _check_dtypes(c, dtypes)
    for key, shape in shapes.items():
        n = 1
        for s in shape:
            n *= s
        c.that(n <= MAX_ELEMENTS, f"tensor {key} declares {n} elements")
    T, d, L = len(meta["tokens"]), meta["hidden_size"], meta["num_layers"]
    c.that("token_ids" in shapes, "the token_ids tensor is missing")
    want = {"token_ids": (T,), "embeddings": (T, d), "residual": (len(meta["residual_layers"]), T, d),
            "attn_out_norm": (L, T), "mlp_out_norm": (L, T)}
    for key, shape in want.items():
        if key in shapes:
            c.that(tuple(shapes[key]) == shape, f"{key} has shape {list(shapes[key])}, expected {list(shape)} "
                                                f"for {T} tokens")
    if "last_logits" in shapes:
        c.that(len(shapes["last_logits"]) == 1, "last_logits is not a vector")
    for i, _ in enumerate(meta["norm_names"]):
        for part in ("input_rms", "output_mean", "output_std"):
            key = f"norm.{i}.{part}"
            c.that(key in shapes, f"the tensor {key} is missing")
            c.that(tuple(shapes[key]) == (T,), f"{key} has shape {list(shapes[key])}, expected [{T}]")
    _check_attention(c, meta, shapes, T)
    if meta.get("summary_layers") is not None:
        for part in ("entropy", "first_token", "lookback"):
            key = f"summary.{part}"
            c.that(key in shapes, f"the tensor {key} is missing")
            c.that(tuple(shapes[key]) == (len(meta["summary_layers"]), meta["num_heads"], T),
                   f"{key} has shape {list(shapes[key])}")
    for k, lm in meta.get("lens", {}).items():
        c.that(isinstance(lm, dict) and {"layers", "positions"} <= set(lm), f"lens {k} is malformed")
        for part in ("token_ids", "probs"):
            key = f"lens.{k}.{part}"
            c.that(key in shapes, f"the tensor {key} is missing")
            c.that(tuple(shapes[key][:2]) == (len(lm["layers"]), len(lm["positions"])),
                   f"{key} has shape {list(shapes[key])}")
    _check_components(c, meta, shapes)


def _check_attention(c: _Check, meta: dict, shapes: dict, T: int) -> None:
    am = meta.get("attention")
    if not am:
        return
    c.that({"num_heads", "num_kv_heads", "layers", "mask_shapes"} <= set(am), "the attention record is incomplete")
    c.that(isinstance(am["layers"], dict) and isinstance(am["mask_shapes"], list), "the attention record is malformed")
    for i, shape in enumerate(am["mask_shapes"]):
        c.that(f"attn.mask.{i}" in shapes and isinstance(shape, list) and all(isinstance(s, int) for s in shape),
               f"attention mask {i} is missing or malformed")
        n = 1
        for s in shape:
            n *= s
        c.that(shapes[f"attn.mask.{i}"] == ((n + 7) // 8,), f"attention mask {i} does not match its shape")
    for layer, lm in am["layers"].items():
        c.that(layer.isdigit() and isinstance(lm, dict) and set(lm) == _LAYER_FIELDS,
               f"attention layer {layer!r} is malformed")
        maps = f"attn.{layer}.maps"
        if maps in shapes:          # the eager fallback's probabilities: (heads, T, T), no Q/K needed
            c.that(tuple(shapes[maps]) == (am["num_heads"], T, T), f"{maps} has shape {list(shapes[maps])}, "
                                                                     f"expected {[am['num_heads'], T, T]}")
            continue
        for part in ("q", "k"):
            key = f"attn.{layer}.{part}"
            c.that(key in shapes, f"the tensor {key} is missing")
            c.that(len(shapes[key]) == 4, f"{key} should have 4 dimensions")
        q, k = shapes[f"attn.{layer}.q"], shapes[f"attn.{layer}.k"]
        c.that(q[1] == am["num_heads"] and k[1] == am["num_kv_heads"] and q[3] == k[3],
               f"the queries and keys of layer {layer} disagree with the head counts")
        c.that(lm["mask"] is None or (isinstance(lm["mask"], int) and 0 <= lm["mask"] < len(am["mask_shapes"])),
               f"attention layer {layer} points to a mask that is not in the file")


_INT_TENSORS = re.compile(r"^(token_ids|comp\.unembed_ids|comp\.predicted|lens\.\d+\.token_ids)$")
_FLOATS = {"F16", "BF16", "F32", "F64"}


def _check_dtypes(c: _Check, dtypes: dict[str, str]) -> None:
    """Ids are integers, packed masks bytes, everything else floating point: a view indexes with the
    first and does arithmetic on the last."""
    for key, dtype in dtypes.items():
        if _INT_TENSORS.match(key):
            c.that(dtype in {"I64", "I32"}, f"{key} is {dtype}, not integer token ids")
        elif key.startswith("attn.mask."):
            c.that(dtype == "U8", f"{key} is {dtype}, not a packed mask")
        else:
            c.that(dtype in _FLOATS, f"{key} is {dtype}, not floating point")


_COMP_META = {"kv_head_of": list, "final_softcap": (int, float, type(None)), "notes": list, "norms": dict}


def _check_components(c: _Check, meta: dict, shapes: dict) -> None:
    """The components part (explorer/record/components.py) against the model shape the file declares:
    every tensor Attribution and routes read is there, with the shape they index it by."""
    cm = meta.get("components")
    comp_keys = sorted(k for k in shapes if k.startswith("comp."))
    if not cm:
        c.that(not comp_keys, "it holds component tensors but no components record")
        return
    c.that(set(cm) == set(_COMP_META), "the components record is incomplete or has unknown keys")
    for key, kind in _COMP_META.items():
        c.that(isinstance(cm[key], kind) and not isinstance(cm[key], bool), f"components {key!r} is malformed")
    L, H, KV, d, T = meta["num_layers"], meta["num_heads"], meta["num_kv_heads"], meta["hidden_size"], len(meta["tokens"])
    c.that(len(cm["kv_head_of"]) == H and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < KV
                                               for i in cm["kv_head_of"]),
           "the components' kv_head_of does not map each head to a KV head")
    c.that(all(isinstance(n, str) for n in cm["notes"]), "the components' notes must be strings")
    cap = cm["final_softcap"]
    c.that(cap is None or (math.isfinite(cap) and cap > 0), "the components' final_softcap is not a positive number")
    for key in ("resid", "z", "w_o", "mlp", "unembed_ids", "unembed_rows", "predicted"):
        c.that(f"comp.{key}" in shapes, f"the tensor comp.{key} is missing")
    z = shapes["comp.z"]
    c.that(len(z) == 4 and tuple(z[:3]) == (L, T, H) and z[3] >= 1,
           f"comp.z has shape {list(z)}, expected [{L}, {T}, {H}, head size] for {T} tokens")
    hd = z[3]
    n = shapes["comp.unembed_ids"]
    c.that(len(n) == 1 and n[0] >= 1, f"comp.unembed_ids has shape {list(n)}")
    want = {"comp.resid": (L + 1, T, d), "comp.w_o": (L, H, hd, d), "comp.mlp": (L, T, d), "comp.b_o": (L, d),
            "comp.values": (L, KV, T, hd), "comp.unembed_rows": (n[0], d), "comp.unembed_bias": (n[0],),
            "comp.predicted": (T,)}
    for key, shape in want.items():
        if key in shapes:
            c.that(tuple(shapes[key]) == shape, f"{key} has shape {list(shapes[key])}, expected {list(shape)}")
    norm_keys = set()
    for k, nm in cm["norms"].items():
        c.that(k == "final" or (k.isdigit() and int(k) < L), f"components norm {k!r} is not a layer")
        c.that(isinstance(nm, dict) and set(nm) == {"center", "bias"}
               and all(isinstance(v, bool) for v in nm.values()), f"components norm {k!r} is malformed")
        parts = {"scale": (T,), "gain": (d,), **({"bias": (d,)} if nm["bias"] else {})}
        for part, shape in parts.items():
            key = f"comp.norm.{k}.{part}"
            c.that(key in shapes, f"components norm {k!r} has no tensor {key}")
            c.that(tuple(shapes[key]) == shape, f"{key} has shape {list(shapes[key])}, expected {list(shape)}")
            norm_keys.add(key)
    stray = sorted(k for k in comp_keys if k.startswith("comp.norm.") and k not in norm_keys)
    c.that(not stray, f"component tensors {stray[:3]} belong to no norm in the record")
