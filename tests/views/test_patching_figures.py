"""Patching heatmaps and the Intervene view's rows: shapes, a fixed signed scale, token labels
escaped, and the attribution's ranking as the heads offered first."""
from __future__ import annotations

import numpy as np
import torch

from explorer.analyse.attribution import Attribution
from explorer.analyse.intervention_effects import DirectIndirect, Effect
from explorer.views.figures.patching import head_patching_heatmap, probability_bars, residual_patching_heatmap
from explorer.views.intervene_data import effect_rows, heads_from_labels, ranked_heads, split_rows, spoken, with_head


def test_residual_heatmap_is_layers_by_positions_with_escaped_labels():
    scores = np.linspace(-0.5, 1, 3 * 5).reshape(3, 5)
    fig = residual_patching_heatmap(scores, ["a", "<b>", "c", " d", "e"], " Paris", " Rome")
    trace = fig.data[0]
    assert np.asarray(trace.z).shape == (3, 5)
    assert trace.zmin == -1 and trace.zmax == 1 and trace.zmid == 0
    assert "&lt;b&gt;" in trace.x[1] and "<b>" not in trace.x[1]
    assert fig.layout.title.text.startswith("Residual patching")


def test_head_heatmap_scale_grows_past_one_and_ignores_nan():
    scores = np.array([[0.1, 2.5], [np.nan, -0.2]])
    fig = head_patching_heatmap(scores, "a", "b")
    assert fig.data[0].zmax == 2.5 and np.asarray(fig.data[0].z).shape == (2, 2)
    bars = probability_bars([("x", 0.5), ("y", 0.2)], [("y", 0.6), ("z", 0.1)])
    assert list(bars.data[0].x) == ["x", "y", "z"] and list(np.asarray(bars.data[1].y)) == [0, np.float32(0.6),
                                                                                           np.float32(0.1)]


def test_ranked_heads_are_the_heads_pushing_the_answer_up_most():
    heads = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    att = Attribution(0, 1, 1.0, heads, torch.tensor([5.0, 0.0]), torch.zeros(2), torch.zeros(2), 0.0, 0.0)
    assert ranked_heads(att, 2) == ["1.0", "1.1"]          # the MLP and the negative head are not offered
    assert [(s.layer, s.head) for s in heads_from_labels(["1.0", "0.1"])] == [(1, 0), (0, 1)]
    effect = Effect("h1.0", 3, 2.0, 1.0, 0.5, 0.2, 0.1, [(3, 0.5), (4, 0.3)], [(4, 0.6), (3, 0.2)])
    rows = effect_rows(effect, lambda i: f"t{i}")
    assert rows[0] == {"token": "t3", "plain": 0.5, "with interventions": 0.2, "change": 0.2 - 0.5}
    assert [r["logit"] for r in split_rows(DirectIndirect(-1.0, -2.0, 1.0))] == [-1.0, -2.0, 1.0]


def test_interventions_are_said_as_heads_off_and_a_head_joins_once():
    from explorer.record.interventions import HeadAblation, parse

    assert spoken(parse("h14.2")) == "head 14.2 off"
    assert spoken(parse("h14.2,h20.5")) == "heads 14.2 and 20.5 off"
    assert spoken(parse("h1.0,h2.1,h3.2")) == "heads 1.0, 2.1 and 3.2 off"
    assert spoken(parse("h1.0,skip:mlp7")) == "h1.0, skip:mlp7"            # not all heads off: the short forms
    assert with_head(parse("h1.0"), 2, 3) == [HeadAblation(1, 0), HeadAblation(2, 3)]
    assert with_head(parse("h1.0,h2.3"), 2, 3) == parse("h1.0,h2.3")
    assert with_head(parse("h2.3x0.5,n1.5"), 2, 3) == parse("n1.5,h2.3")     # off replaces its scaling
