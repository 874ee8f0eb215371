"""Bad model sources made on the fly, and a resident model to prove nothing was lost.

Shared by the API, CLI and AppTest parts of the bad-input suite (tests/model/test_bad_input.py,
tests/cli/test_cli_bad_input.py, tests/pages/test_page_bad_input.py). Each maker writes one kind of
damage into a fresh folder next to a good tiny model, so a case fails for one reason only.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch
from huggingface_hub import errors as hub_errors
from huggingface_hub.utils._http import httpx2 as httpx  # the HTTP client the hub raises with
from transformers import BertConfig, LlamaConfig

from tests.tiny_models import save_tiny_folder

PROBE_IDS = torch.tensor([[1, 5, 9, 42, 7]])  # (1, T) a fixed input for the logits check


def logits_of(loaded) -> torch.Tensor:
    """The resident model's logits on a fixed input: equal before and after means nothing was lost."""
    with torch.inference_mode():
        return loaded.model(PROBE_IDS.to(loaded.model.device)).logits.float().cpu()  # (1, T, V)


def _copy(good: Path, dest: Path) -> Path:
    shutil.copytree(good, dest)
    return dest


def config_only(good: Path, dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(good / "config.json", dest / "config.json")
    return dest


def truncated_weights(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    w = dest / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    return dest


def garbage_header(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", 40) + b"{not json at all, just some bytes.}!!!!" + b"\0" * 64)
    return dest


def huge_header(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    (dest / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + b"{}")
    return dest


def mismatched_weights(good: Path, dest: Path) -> Path:
    """The config of a wider model next to the tiny model's weights."""
    _copy(good, dest)
    config = json.loads((dest / "config.json").read_text())
    config["hidden_size"] = 96
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def pickle_only(good: Path, dest: Path, name: str = "pytorch_model.bin") -> Path:
    _copy(good, dest)
    (dest / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, dest / name)
    return dest


def pt_only(good: Path, dest: Path) -> Path:
    return pickle_only(good, dest, "model.pt")


def remote_code(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    config = json.loads((dest / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "modeling_evil.py").write_text("raise SystemExit('the payload ran')\n")
    return dest


def bert_folder(good: Path, dest: Path) -> Path:
    dest.mkdir()
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64).save_pretrained(dest)
    return dest


def broken_tokenizer(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    (dest / "tokenizer.json").write_text("{ this is not a tokenizer")
    return dest


def no_config(good: Path, dest: Path) -> Path:
    dest.mkdir()
    (dest / "README.md").write_text("no model here")
    return dest


def fake_gguf(good: Path, dest: Path) -> Path:
    dest.mkdir()
    path = dest / "model.gguf"
    path.write_bytes(b"NOTAGGUF" + b"\0" * 100)
    return path


def text_file(good: Path, dest: Path) -> Path:
    dest.mkdir()
    path = dest / "weights.txt"
    path.write_text("hello")
    return path


def bad_config_json(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    (dest / "config.json").write_text("{ broken json")
    return dest


def _sparse(path: Path, size: int, start: bytes) -> None:
    """A file of `size` bytes that takes no disk: the size check must refuse it from stat() alone."""
    with path.open("wb") as f:
        f.write(start)
        f.truncate(size)


def huge_config(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    _sparse(dest / "config.json", 2**30, (dest / "config.json").read_bytes())
    return dest


def huge_tokenizer(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    _sparse(dest / "tokenizer.json", 200 * 2**20, (dest / "tokenizer.json").read_bytes())
    return dest


def huge_generation_config(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    _sparse(dest / "generation_config.json", 17 * 2**20, b"{}")
    return dest


def deep_config(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    (dest / "config.json").write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return dest


def huge_index(good: Path, dest: Path) -> Path:
    _copy(good, dest)
    _sparse(dest / "model.safetensors.index.json", 20 * 2**20, b'{"weight_map": {}}')
    return dest


FOLDER_MAKERS = {
    "huge_config": huge_config, "huge_tokenizer": huge_tokenizer, "huge_generation_config": huge_generation_config,
    "deep_config": deep_config, "huge_index": huge_index,
    "config_only": config_only, "truncated_weights": truncated_weights, "garbage_header": garbage_header,
    "huge_header": huge_header, "mismatched_weights": mismatched_weights, "pickle_only": pickle_only,
    "pt_only": pt_only, "remote_code": remote_code, "bert": bert_folder, "broken_tokenizer": broken_tokenizer,
    "no_config": no_config, "fake_gguf": fake_gguf, "text_file": text_file, "bad_config_json": bad_config_json,
}


def make_good(root: Path, tokenizer) -> Path:
    return save_tiny_folder("llama", root / "good", tokenizer)


# --------------------------------------------------------------------------- hub failures


def _response(status: int, url: str = "https://huggingface.co/owner/name/resolve/main/config.json") -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", url))


def hub_failure(kind: str) -> Exception:
    """A real huggingface_hub exception of each kind the loader must tell apart."""
    if kind == "gated":
        return hub_errors.GatedRepoError("403 gated", response=_response(403))
    if kind == "unknown":
        return hub_errors.RepositoryNotFoundError("404 not found", response=_response(404))
    if kind == "server":
        return hub_errors.HfHubHTTPError("500 Server Error", response=_response(500))
    if kind == "bad_token":
        return hub_errors.HfHubHTTPError("401 Invalid credentials in Authorization header", response=_response(401))
    if kind == "server_wrapped":  # what hf_hub_download raises on a 500: "not in the cache", from the 500
        try:
            raise hub_failure("server")
        except hub_errors.HfHubHTTPError as inner:
            try:
                raise hub_errors.LocalEntryNotFoundError("An error happened while trying to locate the file on "
                                                         "the Hub and we cannot find the requested files in the "
                                                         "local cache.") from inner
            except hub_errors.LocalEntryNotFoundError as outer:
                return outer
    if kind == "offline":
        return hub_errors.LocalEntryNotFoundError("Cannot find the requested files in the local cache")
    raise ValueError(kind)


def patch_hub(monkeypatch, kind: str) -> None:
    """The hub 'answers' with `kind`: reachable, nothing cached, and the download raises."""
    import huggingface_hub

    from explorer.model import preflight

    def download(*args, **kwargs):
        raise hub_failure(kind)

    monkeypatch.setattr(preflight, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)


def tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1)
