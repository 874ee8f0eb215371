"""Capture files keep the components: attribution and routes answer the same without the model."""
from __future__ import annotations

import torch

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.capture_bundle import describe_capture
from explorer.analyse.routes import attention_rows_from_store, build_routes
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.record.capture_file import open_capture, save_capture
from tests.tiny_models import tiny_model, with_random_biases


def test_components_survive_save_and_open(tmp_path):
    model = with_random_biases(tiny_model("gemma2"))     # post-attention norms, final softcap
    cap = capture(model, None, torch.randint(3, 250, (14,)), CaptureOptions(parts=PARTS))
    path = tmp_path / "c.capture"
    save_capture(cap, str(path))
    del model
    back = open_capture(str(path))
    assert back.components is not None and "components" in describe_capture(back)
    a, b = direct_logit_attribution(cap.components, 7), direct_logit_attribution(back.components, 7)
    torch.testing.assert_close(a.heads, b.heads)
    assert abs(a.logit - b.logit) < 1e-6 and b.notes
    g1 = build_routes(cap.components, attention_rows_from_store(cap.attention), -1, 0.03)
    g2 = build_routes(back.components, attention_rows_from_store(back.attention), -1, 0.03)
    assert [(e.source, e.target, e.kind) for e in g1.edges] == [(e.source, e.target, e.kind) for e in g2.edges]
    assert max(abs(e.importance - f.importance) for e, f in zip(g1.edges, g2.edges)) < 1e-5
