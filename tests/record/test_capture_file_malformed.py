"""Malformed capture files: one clear CaptureFileError each, the same sentence from `open_capture`
and from the CLI `show`, and never a traceback (issue 12, item 8)."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from explorer.analyse.attention import capture_head_summaries
from explorer.analyse.capture_bundle import open_with_results, save_with_results
from explorer.analyse.derived import Derived
from explorer.cli.main import main
from explorer.model.errors import CaptureFileError
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
from explorer.record.capture_file import META_KEY, open_capture
from tests.tiny_models import tiny_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("caps") / "good.capture"
    options = CaptureOptions(parts=DEFAULT_PARTS | {"components"})
    cap = capture(tiny_model("llama"), None, torch.randint(3, 256, (6,), generator=torch.Generator().manual_seed(0)),
                  options)
    save_with_results(cap, path, Derived(summaries=capture_head_summaries(cap)))
    return path


def _parts(path):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        meta = json.loads(f.metadata()[META_KEY])
    return tensors, meta


def _rewrite(good, dest, edit):
    tensors, meta = _parts(good)
    edit(tensors, meta)
    save_file(tensors, str(dest), metadata={META_KEY: json.dumps(meta)})


def _raw(data: bytes):
    return lambda good, dest: dest.write_bytes(data if data is not None else b"")


def _truncated(good, dest):
    data = good.read_bytes()
    dest.write_bytes(data[: len(data) - 100])


def _header_only(good, dest):
    data = good.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    dest.write_bytes(data[: 8 + n])


def _edit(fn):
    return lambda good, dest: _rewrite(good, dest, fn)


def _set(key, value):
    def edit(tensors, meta):
        meta[key] = value
    return edit


def _nan(tensors, meta):
    tensors["residual"][0, 0, 0] = float("nan")


def _deep_meta(good, dest):
    tensors, _ = _parts(good)
    save_file(tensors, str(dest), metadata={META_KEY: "[" * 100_000 + "]" * 100_000})


def _meta_number(good, dest):
    tensors, _ = _parts(good)
    save_file(tensors, str(dest), metadata={META_KEY: "{"})


def _no_meta(good, dest):
    tensors, _ = _parts(good)
    save_file(tensors, str(dest))


CASES = [  # id, maker, phrase
    ("empty", _raw(b""), "empty or truncated"),
    ("truncated", _truncated, "truncated"),
    ("header only", _header_only, "truncated"),
    ("huge declared size", _raw(struct.pack("<Q", 2**62) + b"{}"), "corrupt or truncated"),
    ("not JSON", _raw(struct.pack("<Q", 6) + b"{oops}"), "not valid JSON"),
    ("token_ids missing", _edit(lambda t, m: t.pop("token_ids")), "token_ids tensor is missing"),
    ("shapes disagree", _edit(lambda t, m: t.__setitem__("residual", t["residual"][:, :3].contiguous())), "residual has shape"),
    ("unknown meta key", _edit(_set("evil", 1)), "unknown metadata keys ['evil']"),
    ("unknown anatomy key", _edit(lambda t, m: m["anatomy"].__setitem__("evil", 1)), "unknown anatomy keys"),
    ("anatomy null", _edit(_set("anatomy", None)), "'anatomy' is empty"),
    ("norm_names missing", _edit(lambda t, m: m.pop("norm_names")), "lacks 'norm_names'"),
    ("unknown tensor", _edit(lambda t, m: t.__setitem__("payload", torch.zeros(2))), "unknown tensors ['payload']"),
    ("NaN values", _edit(_nan), "NaN"),
    ("newer version", _edit(_set("version", 99)), "newer version"),
    ("tokens and texts disagree", _edit(lambda t, m: m["token_texts"].pop()), "token texts"),
    ("norm tensor missing", _edit(lambda t, m: t.pop("norm.0.input_rms")), "norm.0.input_rms is missing"),
    ("attention q missing", _edit(lambda t, m: t.pop("attn.0.q")), "attn.0.q is missing"),
    ("not a capture", _no_meta, "not an LLM Explorer capture"),
    # issue 21 item 1: the components part is checked like the rest, before any view reads it
    ("comp.z cut", _edit(lambda t, m: t.__setitem__("comp.z", t["comp.z"][:, :, :2].contiguous())), "comp.z has shape"),
    ("comp.w_o dropped", _edit(lambda t, m: t.pop("comp.w_o")), "comp.w_o is missing"),
    ("comp norm with no tensor", _edit(lambda t, m: m["components"]["norms"].__setitem__("1", {"center": False, "bias": False})),
     "has no tensor comp.norm.1.scale"),
    ("comp norm of layer 7", _edit(lambda t, m: m["components"]["norms"].__setitem__("7", {"center": False, "bias": False})),
     "norm '7' is not a layer"),
    ("comp.values wrong heads", _edit(lambda t, m: t.__setitem__("comp.values", t["comp.values"][:, :1].contiguous())),
     "comp.values has shape"),
    ("comp kv_head_of out of range", _edit(lambda t, m: m["components"].__setitem__("kv_head_of", [0, 0, 9, 9])),
     "kv_head_of does not map"),
    ("comp record missing", _edit(_set("components", None)), "no components record"),
    ("comp record key missing", _edit(lambda t, m: m["components"].pop("norms")), "components record is incomplete"),
    ("comp unknown tensor", _edit(lambda t, m: t.__setitem__("comp.evil", torch.zeros(2))), "unknown tensors"),
    ("token ids as floats", _edit(lambda t, m: t.__setitem__("token_ids", t["token_ids"].float())), "not integer token ids"),
    ("predicted as floats", _edit(lambda t, m: t.__setitem__("comp.predicted", t["comp.predicted"].float())),
     "not integer token ids"),
    ("residual as ints", _edit(lambda t, m: t.__setitem__("residual", t["residual"].long())), "not floating point"),
    ("metadata 100,000 deep", _deep_meta, "nests deeper than 64 levels"),
    ("metadata not text", _meta_number, "not valid JSON"),
]


@pytest.mark.parametrize("case,make,phrase", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_capture_file_gets_one_clear_message_from_open_and_show(good, tmp_path, capsys, case, make, phrase):
    path = tmp_path / "bad.capture"
    make(good, path)
    with pytest.raises(CaptureFileError) as info:
        open_capture(path)
    message = str(info.value)
    assert phrase in message and "Traceback" not in message and message.startswith("bad.capture")
    assert main(["show", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


def test_the_good_file_still_opens(good):
    cap, results = open_with_results(good)
    assert cap.num_tokens == 6 and cap.attention is not None and results.summaries is not None


TAMPERED = [c for c in CASES if c[0].startswith("comp")]


@pytest.mark.parametrize("case,make,phrase", TAMPERED, ids=[c[0] for c in TAMPERED])
def test_routes_on_a_tampered_components_part_says_one_sentence_and_writes_nothing(good, tmp_path, capsys, case,
                                                                                    make, phrase):
    path, out = tmp_path / "bad.capture", tmp_path / "routes.json"
    make(good, path)
    assert main(["routes", "--capture", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad.capture is not a valid capture file") and phrase in err
    assert "Unexpected" not in err and "Traceback" not in err and not out.exists()


def test_the_good_file_with_components_explains_its_last_token(good, tmp_path, capsys):
    out = tmp_path / "routes.json"
    assert main(["routes", "--capture", str(good), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["attribution"]
