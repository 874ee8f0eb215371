"""`python -m explorer routes`: graph and attribution JSON from a capture file or a real run."""
from __future__ import annotations

import json

import pytest
import torch

from explorer.cli.main import main
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.record.capture_file import save_capture
from tests.tiny_models import tiny_model


def test_routes_from_a_capture_file_writes_graph_and_attribution(tmp_path, capsys):
    cap = capture(tiny_model("llama"), None, torch.randint(3, 250, (12,)), CaptureOptions(parts=PARTS))
    path, out = tmp_path / "c.capture", tmp_path / "routes.json"
    save_capture(cap, str(path))
    assert main(["routes", "--capture", str(path), "--out", str(out), "--threshold", "0.05"]) == 0
    data = json.loads(out.read_text())
    assert data["routes"]["position"] == 11 and data["routes"]["edges"]
    assert all(e["importance"] > 0.05 for e in data["routes"]["edges"])
    assert len(data["attribution"]["top"]) == 3 * 4 + 3 + 1      # every head, MLP and the embedding
    assert data["attribution"]["target"] == int(cap.components.predicted[-1])
    assert "nodes" in capsys.readouterr().out


def test_routes_on_a_capture_without_components_is_a_clear_error(tmp_path, capsys):
    cap = capture(tiny_model("llama"), None, torch.randint(3, 250, (6,)))
    path = tmp_path / "plain.capture"
    save_capture(cap, str(path))
    assert main(["routes", "--capture", str(path), "--out", str(tmp_path / "r.json")]) == 2
    assert "components" in capsys.readouterr().err


@pytest.mark.slow
def test_routes_command_on_the_embedded_model(tmp_path, embedded_bf16):
    out = tmp_path / "routes.json"
    status = main(["routes", "--precision", "bf16", "--prompt", "The capital of France is", "--out", str(out)])
    assert status == 0
    data = json.loads(out.read_text())
    assert data["target_text"].strip() == "Paris"
    assert any(e["kind"] == "attention" for e in data["routes"]["edges"])
