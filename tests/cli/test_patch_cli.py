"""`python -m explorer patch` and `generate --ablate` on a tiny model saved with a real tokenizer."""
from __future__ import annotations

import json

import pytest

from explorer.cli.main import main


@pytest.fixture
def folder(tiny_folder):
    return tiny_folder


def test_patch_writes_both_grids(folder, tmp_path, capsys):
    out = tmp_path / "patch.json"
    status = main(["patch", "--model", str(folder), "--precision", "fp32", "--clean", "The capital of France is",
                   "--corrupt", "The capital of Italy is", "--out", str(out), "--batch-rows", "4"])
    assert status == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    t = len(report["tokens"])
    assert len(report["resid"]["scores"]) == 3 and len(report["resid"]["scores"][0]) == t
    assert len(report["head"]["scores"]) == 3 and len(report["head"]["scores"][0]) == 4
    assert report["resid"]["answer"] != report["resid"]["foil"]
    assert abs(report["resid"]["scores"][-1][-1] - 1.0) < 1e-3


@pytest.mark.parametrize("argv, words", [
    (["--sites", "resid,neurons"], "--sites"),
    (["--out", "/no/such/folder/x.json"], "does not exist"),
])
def test_patch_arguments_are_checked_before_the_model_loads(argv, words, tmp_path, capsys):
    base = ["patch", "--model", str(tmp_path / "no-model-here"), "--clean", "a b", "--corrupt", "a c",
            "--out", str(tmp_path / "x.json")]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "no-model-here" not in err


def test_patch_refuses_prompts_of_different_lengths(folder, tmp_path, capsys):
    assert main(["patch", "--model", str(folder), "--precision", "fp32", "--clean", "The capital of France is",
                 "--corrupt", "The capital city of the Netherlands is", "--out", str(tmp_path / "x.json")]) == 2
    assert "same token length" in capsys.readouterr().err


def test_generate_with_ablate_runs_and_a_bad_spec_is_refused_before_loading(folder, tmp_path, capsys):
    assert main(["generate", "--model", str(folder), "--precision", "fp32", "--prompt", "hi",
                 "--max-new-tokens", "3", "--ablate", "0.1,2.3"]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "none"), "--prompt", "hi", "--ablate", "h1.x"]) == 2
    assert "is not an intervention" in capsys.readouterr().err
    assert main(["generate", "--model", str(folder), "--precision", "fp32", "--prompt", "hi",
                 "--ablate", "9.0"]) == 2
    assert "layers 0 to 2" in capsys.readouterr().err
