"""A snapshot of everything a Capture holds, to prove that reading it changed nothing.

Why data pointers as well as values: a view that replaced a tensor by an equal copy, or wrote
into one in place and back, is still writing into the capture."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


def snapshot(obj: Any, depth: int = 0) -> Any:
    """A nested plain structure: tensors as (data_ptr, shape, stride, dtype, device, a clone)."""
    if depth > 12:
        raise RecursionError("capture structure nested deeper than expected")
    if isinstance(obj, torch.Tensor):
        return ("tensor", obj.data_ptr(), tuple(obj.shape), obj.stride(), obj.dtype, str(obj.device),
                obj.detach().clone())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: snapshot(getattr(obj, f.name), depth + 1) for f in dataclasses.fields(obj)}
        return {"(type)": type(obj).__name__, **fields, **_extra(obj, depth)}
    if isinstance(obj, dict):
        return {k: snapshot(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [snapshot(v, depth + 1) for v in obj]
    if isinstance(obj, (str, int, float, bool, type(None), torch.dtype, torch.device)):
        return obj
    if hasattr(obj, "__dict__"):
        return {"(type)": type(obj).__name__, **{k: snapshot(v, depth + 1) for k, v in sorted(vars(obj).items())}}
    return repr(obj)


def _extra(obj: Any, depth: int) -> dict:
    """Attributes set on a dataclass instance beyond its fields (a view adding one is a write)."""
    names = {f.name for f in dataclasses.fields(obj)}
    return {k: snapshot(v, depth + 1) for k, v in sorted(vars(obj).items()) if k not in names}


def differences(a: Any, b: Any, path: str = "capture") -> list[str]:
    """Where two snapshots differ, as readable paths (empty: identical)."""
    if isinstance(a, tuple) and a and a[0] == "tensor":
        if not (isinstance(b, tuple) and b and b[0] == "tensor"):
            return [f"{path}: tensor replaced by {type(b).__name__}"]
        out = [f"{path}: {name} changed" for name, x, y in zip(("data_ptr", "shape", "stride", "dtype", "device"),
                                                                 a[1:6], b[1:6]) if x != y]
        if not out and not torch.equal(a[6], b[6]):
            out.append(f"{path}: values changed")
        return out
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} became {type(b).__name__}"]
    if isinstance(a, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in (differences(a[k], b[k], f"{path}.{k}") if k in a and k in b
                                          else [f"{path}.{k}: {'added' if k in b else 'removed'}"])]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} became {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} became {b!r}"]


def tensors_of(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor reachable through dataclass fields, dicts, lists and tuples, by its path
    (".attention.layers[3].q"): to compare two captures tensor by tensor."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            out.update(tensors_of(getattr(obj, f.name), f"{prefix}.{f.name}"))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensors_of(v, f"{prefix}[{k}]"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensors_of(v, f"{prefix}[{i}]"))
    return out

