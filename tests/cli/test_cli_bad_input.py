"""Bad input through the CLI: `error: …` on stderr, exit status 2, never a traceback.

Every argument is checked before a model loads, so most rows cost milliseconds; the rows that
need a model use tiny folders made on the fly.
"""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from explorer.cli.main import main
from explorer.model.loading import embedded_model_dir
from explorer.record.capture import capture
from tests import bad_inputs as B
from tests.tiny_models import save_tiny_folder, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(embedded_model_dir()))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli_bad")
    good = B.make_good(root, tokenizer)
    made = {name: make(good, root / name) for name, make in B.FOLDER_MAKERS.items()}
    made["good"] = good
    corrupt = root / "corrupt.capture"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    made["corrupt_capture"] = corrupt
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    made["latin1"] = root / "latin1.txt"
    return made


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors: usage + "error: …", status 2
        status = exit_.code
    err = capsys.readouterr().err
    return status, err


def _cases(f):
    cap = ["capture", "--model", str(f["good"]), "--precision", "fp32", "--prompt", "hi"]
    gen = ["generate", "--precision", "fp32", "--prompt", "hi", "--max-new-tokens", "2"]
    out = ["--out", str(f["good"].parent / "x.capture")]
    return [
        ("--layers abc", cap + out + ["--layers", "abc"], "not a layer number"),
        ("--layers 5-2", cap + out + ["--layers", "5-2"], "range"),
        ("--parts foo", cap + out + ["--parts", "foo"], "unknown --parts foo"),
        ("--lens -3", cap + out + ["--lens", "-3"], "negative"),
        ("--budget-gib -1", cap + out + ["--budget-gib", "-1"], "positive"),
        ("--out in a missing folder", cap + ["--out", "/no/such/folder/x.capture"], "does not exist"),
        ("--prompt-file missing", ["capture", "--prompt-file", "/no/such.txt"] + out, "does not exist"),
        ("--prompt-file not UTF-8", ["capture", "--prompt-file", str(f["latin1"])] + out, "not UTF-8"),
        ("--prompt invalid UTF-8", ["capture", "--prompt", "caf\udce9"] + out, "not valid UTF-8"),
        ("--layers beyond the model", cap + out + ["--layers", "0,99"], "has 3 layers"),
        ("show a corrupt file", ["show", str(f["corrupt_capture"])], "not a valid capture file"),
        ("show a missing file", ["show", "/no/such.capture"], "Cannot read"),
        ("show --top 0", ["show", str(f["corrupt_capture"]), "--top", "0"], "at least 1"),
        ("generate: 5000-char model", gen + ["--model", "a" * 5000], "too long"),
        ("generate: owner/na$me", gen + ["--model", "owner/na$me"], "not a valid hub id"),
        ("generate: NUL in model", gen + ["--model", "abc\x00def"], "control characters"),
        ("generate: config only", gen + ["--model", str(f["config_only"])], "has no weights"),
        ("generate: BERT", gen + ["--model", str(f["bert"])], "encoder"),
        ("generate: truncated weights", gen + ["--model", str(f["truncated_weights"])], "truncated"),
        ("generate: mismatched weights", gen + ["--model", str(f["mismatched_weights"])], "do not fit"),
        ("generate: model.pt", gen + ["--model", str(f["pt_only"])], "model.pt"),
        ("generate: remote code", gen + ["--model", str(f["remote_code"])], "EXPLORER_ALLOW_REMOTE_CODE"),
        ("generate: broken tokenizer", gen + ["--model", str(f["broken_tokenizer"])], "tokenizer"),
        ("generate: --max-new-tokens 0", gen[:-2] + ["--max-new-tokens", "0", "--model", str(f["good"])],
         "at least 1"),
        ("generate: --top-p 7", gen + ["--model", str(f["good"]), "--sample", "--top-p", "7"], "--top-p"),
        ("capture: pickle refused", ["capture", "--model", str(f["pickle_only"]), "--precision", "fp32",
                                     "--prompt", "hi"] + out, "pytorch_model.bin"),
        ("compare: bad --prompt-file", ["compare", "--prompt-file", "/no/such.txt", "--out",
                                        str(f["good"].parent / "c.json")], "cannot read"),
    ]


CASE_IDS = [c[0] for c in _cases({k: __import__("pathlib").Path("/x") for k in
                                  list(B.FOLDER_MAKERS) + ["good", "corrupt_capture", "latin1"]})]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_bad_cli_input_is_one_error_line_and_exit_2(folders, capsys, index):
    name, argv, phrase = _cases(folders)[index]
    status, err = run_cli(argv, capsys)
    assert status == 2, err
    assert "error:" in err and phrase in err, err
    assert "Traceback" not in err and "\x1b" not in err


def test_an_unexpected_exception_in_a_handler_is_still_one_line(monkeypatch, capsys):
    from explorer.cli import capture as capture_cmd

    def boom(args):
        raise AttributeError("'NoneType' object has no attribute 'decode'")

    monkeypatch.setattr(capture_cmd, "open_capture", lambda path: boom(None))
    status, err = run_cli(["show", "anything.capture"], capsys)
    assert status == 2 and err.startswith("error: Unexpected error (AttributeError)") and "Traceback" not in err


def test_the_pickle_switch_is_honoured_by_capture_and_generate(tokenizer, tmp_path, monkeypatch, capsys):
    folder = save_tiny_folder("llama", tmp_path / "pickled", tokenizer, safe_serialization=False)
    args = ["generate", "--model", str(folder), "--precision", "fp32", "--prompt", "hi", "--max-new-tokens", "2"]
    assert run_cli(args, capsys)[0] == 2
    monkeypatch.setenv("EXPLORER_ALLOW_PICKLE", "1")
    assert main(args) == 0
    out = tmp_path / "p.capture"
    assert main(["capture", "--model", str(folder), "--precision", "fp32", "--prompt", "hi", "--out", str(out)]) == 0
    assert out.exists()
