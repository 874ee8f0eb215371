"""`python -m explorer capture|show`: a real model run end to end, and the file summary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.analyse.attention import capture_head_summaries
from explorer.analyse.capture_bundle import save_with_results
from explorer.analyse.derived import Derived
from explorer.cli.capture import _parse_layers
from explorer.cli.main import build_parser, main
from explorer.record.capture import capture
from tests.tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[2]


def test_parser_has_subcommands_and_layer_ranges():
    args = build_parser().parse_args(["capture", "--prompt", "hi", "--out", "x.capture"])
    assert args.model == "embedded" and args.precision == "nf4" and callable(args.handler)
    assert _parse_layers("0, 4,8-10") == [0, 4, 8, 9, 10]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["capture", "--out", "x"])          # a prompt is required


def test_show_subprocess(tmp_path):
    path = tmp_path / "tiny.capture"
    cap = capture(tiny_model("llama"), None, torch.randint(3, 256, (7,)))
    save_with_results(cap, str(path), Derived(summaries=capture_head_summaries(cap)))
    out = subprocess.run([sys.executable, "-m", "explorer", "show", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "tokens: 7" in out.stdout and "layers: 3" in out.stdout and "first-token head" in out.stdout


def test_show_reports_unreadable_file(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing.capture")]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_capture_command_on_embedded_model(tmp_path, capsys, embedded_bf16):
    out = tmp_path / "x.capture"
    status = main(["capture", "--model", "embedded", "--precision", "bf16", "--prompt",
                   "The capital of France is", "--out", str(out), "--layers", "0,29", "--lens", "3"])
    assert status == 0 and out.exists()
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "residual (2/30 layers)" in shown and "logit lens" in shown and "Paris" in shown
