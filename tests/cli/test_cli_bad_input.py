"""Bad input through the CLI: `error: …` on stderr, exit status 2, never a traceback.

Every argument is checked before a model loads, so most rows cost milliseconds; the rows that
need a model use tiny folders made on the fly.
"""
from __future__ import annotations

import json

import pytest

from explorer.cli.main import main
from tests import bad_inputs as B
from tests.tiny_models import save_tiny_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, embedded_tokenizer):
    root = tmp_path_factory.mktemp("cli_bad")
    good = B.make_good(root, embedded_tokenizer)
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
    routes = ["routes", "--model", str(f["good"]), "--precision", "fp32", "--out", str(f["good"].parent / "r.json")]
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
                                        str(f["good"].parent / "c.json")], "does not exist"),
        # issue 21 item 5: text, positions, thresholds and counts, all before a model loads
        ("compare: --prompt invalid UTF-8", ["compare", "--prompt", "caf\udce9", "--out", str(f["good"].parent / "c.json")],
         "not valid UTF-8"),
        ("compare: --prompt-file not UTF-8", ["compare", "--prompt-file", str(f["latin1"]), "--out",
                                              str(f["good"].parent / "c.json")], "not UTF-8"),
        ("compare: --repeats 0", ["compare", "--prompt", "hi", "--repeats", "0", "--out", str(f["good"].parent / "c.json")],
         "at least 1"),
        ("compare: every model fails", ["compare", "--models", str(f["config_only"]), "--precisions", "fp32",
                                        "--prompt", "hi", "--no-drift", "--out", str(f["good"].parent / "c.json")],
         "every model failed"),
        ("routes: --prompt invalid UTF-8", routes + ["--prompt", "caf\udce9"], "not valid UTF-8"),
        ("routes: --prompt-file not UTF-8", routes + ["--prompt-file", str(f["latin1"])], "not UTF-8"),
        ("routes: --position 99", routes + ["--prompt", "one two three", "--position", "99"], "outside the prompt"),
        ("routes: --position -99", routes + ["--prompt", "one two three", "--position", "-99"], "outside the prompt"),
        ("routes: --target out of vocabulary", routes + ["--prompt", "hi", "--target", "99999999"],
         "not a token id"),
        ("routes: --threshold nan", routes + ["--prompt", "hi", "--threshold", "nan"], "share"),
        ("routes: --threshold 2", routes + ["--prompt", "hi", "--threshold", "2"], "share"),
        ("routes: --top -5", routes + ["--prompt", "hi", "--top", "-5"], "negative"),
        ("routes: corrupt capture", ["routes", "--capture", str(f["corrupt_capture"]), "--out",
                                     str(f["good"].parent / "r.json")], "not a valid capture file"),
        # issue 21 item 2: outputs checked before the run, never a device, /proc or a folder
        ("capture --out /dev/full", cap + ["--out", "/dev/full"], "not a regular file"),
        ("capture --out /proc/x.capture", cap + ["--out", "/proc/x.capture"], "system folder"),
        ("capture --out a folder", cap + ["--out", str(f["good"])], "is a folder"),
        ("routes --out /proc/x.json", routes + ["--prompt", "hi", "--out", "/proc/x.json"], "system folder"),
        ("routes --save-capture /dev/null", routes + ["--prompt", "hi", "--save-capture", "/dev/null"],
         "not a regular file"),
        ("compare --out /dev/full", ["compare", "--prompt", "hi", "--out", "/dev/full"], "not a regular file"),
        ("compare --report /proc/x.md", ["compare", "--prompt", "hi", "--out", str(f["good"].parent / "c.json"),
                                         "--report", "/proc/x.md"], "system folder"),
        ("prepare --cache-dir /dev/full", ["prepare", "--cache-dir", "/dev/full"], "not a folder"),
        ("prepare --cache-dir /proc/x", ["prepare", "--cache-dir", "/proc/x"], "system folder"),
        ("prepare --cache-dir a file", ["prepare", "--cache-dir", str(f["latin1"])], "not a folder"),
    ]


CASE_IDS = [c[0] for c in _cases({k: __import__("pathlib").Path("/x") for k in
                                  list(B.FOLDER_MAKERS) + ["good", "corrupt_capture", "latin1"]})]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_bad_cli_input_is_one_error_line_and_exit_2(folders, capsys, index):
    name, argv, phrase = _cases(folders)[index]
    status, err = run_cli(argv, capsys)
    assert status == 2, err
    assert "error:" in err and phrase in err, err
    assert "Traceback" not in err and "\x1b" not in err and "Unexpected error" not in err
    left = [p.name for p in folders["good"].parent.iterdir() if p.suffix in {".capture", ".json", ".tmp", ".md"}
            and p.name != "corrupt.capture"]
    assert not left, f"a failed run left {left}"   # no 0-byte or partial output, no temporary file


def test_an_unexpected_exception_in_a_handler_is_still_one_line(monkeypatch, capsys):
    from explorer.cli import capture as capture_cmd

    def boom(args):
        raise AttributeError("'NoneType' object has no attribute 'decode'")

    monkeypatch.setattr(capture_cmd, "open_with_results", lambda path: boom(None))
    status, err = run_cli(["show", "anything.capture"], capsys)
    assert status == 2 and err.startswith("error: Unexpected error (AttributeError)") and "Traceback" not in err


def test_the_pickle_switch_is_honoured_by_capture_and_generate(embedded_tokenizer, tmp_path, monkeypatch, capsys):
    folder = save_tiny_folder("llama", tmp_path / "pickled", embedded_tokenizer, safe_serialization=False)
    args = ["generate", "--model", str(folder), "--precision", "fp32", "--prompt", "hi", "--max-new-tokens", "2"]
    assert run_cli(args, capsys)[0] == 2
    monkeypatch.setenv("EXPLORER_ALLOW_PICKLE", "1")
    assert main(args) == 0
    out = tmp_path / "p.capture"
    assert main(["capture", "--model", str(folder), "--precision", "fp32", "--prompt", "hi", "--out", str(out)]) == 0
    assert out.exists()


def test_routes_honours_the_pickle_switch_like_generate(embedded_tokenizer, tmp_path, monkeypatch, capsys):
    folder = save_tiny_folder("llama", tmp_path / "pickled", embedded_tokenizer, safe_serialization=False)
    out = tmp_path / "r.json"
    args = ["routes", "--model", str(folder), "--precision", "fp32", "--prompt", "one two", "--out", str(out)]
    monkeypatch.delenv("EXPLORER_ALLOW_PICKLE", raising=False)
    status, err = run_cli(args, capsys)
    assert status == 2 and "EXPLORER_ALLOW_PICKLE" in err and not out.exists()
    monkeypatch.setenv("EXPLORER_ALLOW_PICKLE", "1")
    assert main(args) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["attribution"]["heads"]


def test_a_write_that_fails_half_way_leaves_neither_the_target_nor_a_temporary_file(tmp_path):
    from explorer.model.errors import OutputError
    from explorer.model.safe_write import write_via_temp

    target = tmp_path / "x.json"

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        write_via_temp(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_regular_file_is_replaced_and_a_link_to_a_device_refused(tmp_path):
    from explorer.model.errors import OutputError
    from explorer.model.safe_write import write_text

    target = tmp_path / "x.json"
    target.write_text("old")
    write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    link = tmp_path / "dev.json"
    link.symlink_to("/dev/null")
    with pytest.raises(OutputError, match="not a regular file"):
        write_text(link, "x")
    assert link.is_symlink() and str(link.readlink()) == "/dev/null"


def test_prepare_leaves_no_temporary_folder_when_the_conversion_fails(tmp_path, monkeypatch):
    from explorer.model import embedded

    def broken_save(self, folder, **kwargs):
        (folder / "half.bin").parent.mkdir(parents=True, exist_ok=True)
        (folder / "half.bin").write_bytes(b"x" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("transformers.PreTrainedModel.save_pretrained", broken_save)
    with pytest.raises(OSError):
        embedded.embedded_model_dir(tmp_path)
    leftovers = [p.name for p in (tmp_path / "converted").iterdir()]
    assert leftovers == [], leftovers
