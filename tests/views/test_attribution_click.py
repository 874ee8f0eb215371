"""The attribution chart's heads are clickable where they are drawn: the hover and the [layer, head]
customdata sit on the layer the pointer meets (issue 22: the click used to land on the heatmap)."""
from __future__ import annotations

import numpy as np
import torch

from explorer.analyse.attribution import direct_logit_attribution
from explorer.record.capture import PARTS, CaptureOptions, capture
from explorer.views.figures.attribution import attribution_heatmap
from tests.tiny_models import tiny_model


def test_the_click_layer_takes_the_pointer_and_names_layer_and_head():
    ids = torch.randint(3, 250, (12,), generator=torch.Generator().manual_seed(4))
    cap = capture(tiny_model("llama"), None, ids, CaptureOptions(parts=PARTS))
    att = direct_logit_attribution(cap.components)
    fig = attribution_heatmap(att, " x", "11 ␣y")
    heads = fig.data[0]
    clicks = next(t for t in fig.data if t.type == "scatter")
    assert heads.hoverinfo == "skip" and clicks.hoverinfo != "skip"       # the pointer reaches the markers
    custom = np.asarray(clicks.customdata)
    layer, head = cap.num_layers - 1, cap.num_heads - 1
    i = layer * cap.num_heads + head
    assert custom[i].tolist() == [layer, head]
    assert f"layer {layer} head {head}" in clicks.hovertext[i]
    assert f"{att.heads[layer, head].item():+.3f}" in clicks.hovertext[i]  # the value the heatmap no longer hovers
    assert fig.layout.clickmode == "event+select"
