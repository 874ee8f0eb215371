"""Data flows down: reading a capture through every view, download and file leaves the Capture
exactly as capture() returned it; what the views derive lives beside it (Readout.results)."""
from __future__ import annotations

import torch

from explorer.analyse.capture_bundle import open_with_results
from explorer.analyse.routes import node_vector
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.views.readout import Readout
from tests.capture_snapshot import differences, snapshot
from tests.tiny_models import tiny_model


def read_every_view(r: Readout) -> None:
    """Every Readout entry the Internals page and its downloads use, at a few arguments."""
    t = r.num_tokens
    for layer in r.attention_layers:
        r.attention_view(layer, 1)
    r.attention_view(r.attention_layers[0], 0, (2, 6), (0, 6))
    r.overview()
    r.summary_grids()
    r.summary_grids(t - 1)
    r.token_attention(t - 1)
    r.token_attention(3, 2)
    r.residual_norms()
    r.norm_rows()
    r.contributions()
    r.projection(None, True, True)
    r.projection(r.residual_layers[-1])
    window = r.lens_window(0, t, 3)
    r.trajectory(t - 1)
    r.trajectory(2)
    graph = r.routes(t - 1, 0.05)
    att = r.attribution(t - 1)
    r.token_text(att.target)
    node = graph.nodes[-1]
    r.node_lens((node.kind, node.layer, node.position), lambda: node_vector(r.capture.components, node))
    r.tour_facts()
    for table in (r.tokens_table(), r.head_table(), r.residual_table(), r.norm_table(), r.lens_table(window),
                  r.projection_table(r.projection(None))):
        assert len(table) > 0
    r.capture_file(include_lens=True)
    r.capture_file(include_lens=False)


def test_every_view_leaves_the_capture_as_captured(tmp_path):
    model = tiny_model("llama")
    cap = capture(model, None, torch.randint(3, 250, (14,), generator=torch.Generator().manual_seed(1)),
                  CaptureOptions(parts=PARTS))
    before = snapshot(cap)
    r = Readout(cap, model, None)
    read_every_view(r)
    assert differences(before, snapshot(cap)) == []
    assert r.results.summaries is not None and 5 in r.results.lens     # derived, and kept beside the capture
    # A file saved from the views, opened and read again: its capture is not written into either.
    path = tmp_path / "c.safetensors"
    path.write_bytes(r.capture_file(include_lens=True))
    back, results = open_with_results(path)
    assert results.summaries is not None and 5 in results.lens
    opened = Readout(back, results=results)
    before = snapshot(back)
    read_every_view(opened)
    assert differences(before, snapshot(back)) == []


def test_the_snapshot_sees_a_write():
    """The check above can fail: a result written into a capture, or a tensor changed in place, shows."""
    cap = capture(tiny_model("llama"), None, list(range(3, 12)))
    before = snapshot(cap)
    cap.vocab[7] = "seven"
    assert differences(before, snapshot(cap)) == ["capture.vocab.7: added"]
    cap2 = capture(tiny_model("llama"), None, list(range(3, 12)))
    before = snapshot(cap2)
    with torch.inference_mode():
        cap2.residual[0, 0, 0] += 1
    cap2.lens_cache = {}
    cap2.embeddings = cap2.embeddings.clone()
    assert sorted(differences(before, snapshot(cap2))) == ["capture.embeddings: data_ptr changed",
                                                          "capture.lens_cache: added", "capture.residual: values changed"]
