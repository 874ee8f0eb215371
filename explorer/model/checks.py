"""Checks that run before the resident model is given up: cheap, and reading no tensor data.

Why: a load replaces the one model every session shares. Anything that can be found wrong from
names, headers and configs is found here, so a bad folder costs a message, not the resident model
and not the 25–35 s of reloading it.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path

from explorer.model import read_limits
from explorer.model.errors import BadSource, BadWeights, NotCausal, PickleRefused
from explorer.model.visible_text import message_text

HUB_ID_MAX = 96  # the hub's own limit for owner/name
PATH_MAX = 4096
NAME_MAX = 255
_HUB_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFETENSORS_HEADER_MAX = 100 * 2**20  # the safetensors library's own cap on a header
ST_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
             "U16", "U32", "U64", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"}
# Families whose configs map to a *LMHeadModel class but are encoders: they cannot chat.
ENCODER_FAMILIES = frozenset({
    "bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "electra", "ernie", "data2vec-text",
    "rembert", "roberta-prelayernorm", "bert-generation", "megatron-bert", "big_bird", "roformer", "xmod",
    "qdqbert", "nezha", "mra", "ibert", "distilbert", "albert", "deberta", "deberta-v2", "mpnet", "funnel",
})


def check_source_text(source: str) -> None:
    """Refuse what no filesystem or hub could accept, before either is asked."""
    if any(ord(c) < 32 or ord(c) == 127 for c in source):
        raise BadSource(f"{message_text(source)} contains control characters: it is neither a hub id nor a path.")
    if len(source) > PATH_MAX or any(len(part) > NAME_MAX for part in source.split("/")):
        raise BadSource(f"{message_text(source)} is too long to be a hub id or a path.")


def check_hub_id(repo_id: str) -> None:
    """owner/name (or name): letters, digits, '.', '-', '_', at most 96 characters, no '--' or '..'."""
    problem = None
    parts = repo_id.split("/")
    if len(repo_id) > HUB_ID_MAX:
        problem = f"it is {len(repo_id)} characters long; the hub allows {HUB_ID_MAX}"
    elif len(parts) > 2 or not all(_HUB_PART.match(p) for p in parts):
        problem = "a hub id is owner/name, using letters, digits, '.', '-' and '_'"
    elif "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        problem = "a hub id cannot contain '--' or '..' or end in .git"
    if problem:
        raise BadSource(f"{message_text(repo_id)} is not a valid hub id ({problem}), and no such file or folder exists.")


def refuse_encoder(config, name: str) -> None:
    model_type = getattr(config, "model_type", "")
    if model_type in ENCODER_FAMILIES or getattr(config, "is_encoder_decoder", False):
        raise NotCausal(f"{name} is a {model_type!r} model, an encoder, not a causal language model: it cannot "
                        "generate text here. Choose a decoder model (Llama, Qwen, Phi, Gemma, GPT-2 …).")


# --------------------------------------------------------------------------- weights


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file, checked against the file's size (no tensor is read)."""
    size = path.stat().st_size
    name = path.name
    if size < 8:
        raise BadWeights(f"{name} is empty or truncated ({size} bytes).")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > SAFETENSORS_HEADER_MAX or n > size - 8:
            raise BadWeights(f"{name} is corrupt or truncated: its header claims {n} bytes, the file has {size}.")
        raw = f.read(n)
    header = read_limits.loads(raw, f"the header of {name}", _corrupt(name), limit=SAFETENSORS_HEADER_MAX)
    if not isinstance(header, dict):
        raise BadWeights(f"{name} is corrupt: its header is not valid JSON.")
    data = size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            shape, dtype = entry["shape"], entry["dtype"]
            ok = dtype in ST_DTYPES and 0 <= begin <= end and all(isinstance(s, int) and s >= 0 for s in shape)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BadWeights(f"{name} is corrupt: the entry for {message_text(key, 60)} is malformed.")
        if end > data:
            raise BadWeights(f"{name} is truncated: {message_text(key, 60)} ends at byte {end}, the data holds {data}.")
    return header


def _corrupt(name: str):
    return lambda problem: BadWeights(f"{name} is corrupt: {problem}")


def weight_files(folder: Path, allow_pickle: bool) -> list[Path]:
    """The safetensors files a load would read; refuses pickle-only folders unless allowed."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            data = read_limits.read_bytes(index, read_limits.CONFIG_MAX, BadWeights)
            shards = sorted(set(read_limits.loads(data, index.name, BadWeights)["weight_map"].values()))
        except BadWeights:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            raise BadWeights(f"{index.name} in {folder.name} is corrupt.") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise BadWeights(f"{folder.name} is missing weight files named in its index: {', '.join(missing[:3])}.")
        return [folder / s for s in shards]
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles and not allow_pickle:
        raise PickleRefused(f"{folder.name} ships only pickle weights ({', '.join(pickles[:3])}), which can run "
                            "code when opened; they are refused by default. The operator can allow them with "
                            "EXPLORER_ALLOW_PICKLE=1.")
    if pickles:
        return []
    raise BadWeights(f"{folder.name} has no weights: no .safetensors file (nor any other checkpoint) is in it.")


def check_shapes(config, headers: dict[str, dict], name: str) -> None:
    """Compare the checkpoint's tensor shapes with a meta-device model built from the config."""
    if getattr(config, "quantization_config", None) is not None:
        return  # pre-quantized checkpoints store packed shapes
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # noqa: BLE001 - a config the classes reject
        raise BadWeights(f"{name}: its config.json does not describe a model that can be built "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}).") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(e["shape"]) for k, e in headers.items()}
    matched = 0
    for key, shape in found.items():
        want = expected.get(key) or expected.get(key.removeprefix("model.")) or expected.get("model." + key)
        if want is None:
            continue
        matched += 1
        if want != shape:
            raise BadWeights(f"{name}: the weights do not fit its config: {key} is {list(shape)} in the file but "
                             f"the config makes it {list(want)}. The folder mixes files from different models.")
    if found and not matched:
        raise BadWeights(f"{name}: none of the {len(found)} tensors in its weights belongs to the architecture "
                         f"in its config.json ({getattr(config, 'model_type', '?')}).")


def check_weights(folder: Path, config, name: str, allow_pickle: bool) -> None:
    headers: dict[str, dict] = {}
    for path in weight_files(folder, allow_pickle):
        header = read_safetensors_header(path)
        headers.update({k: v for k, v in header.items() if k != "__metadata__"})
    if headers:
        check_shapes(config, headers, name)


def check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise BadWeights(f"Cannot read {path.name}: {exc.strerror}.") from None
    if magic != b"GGUF":
        raise BadWeights(f"{path.name} is not a GGUF file (it does not start with the GGUF signature).")
