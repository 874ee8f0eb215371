"""Direct logit attribution figures: a layers × heads heatmap with an MLP column, and the ranked table.

Colour is signed (red pushes the token's logit up, blue pushes it down) and centred on zero, so a
head that argues against the prediction is as visible as one that argues for it.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.analyse.attribution import Attribution
from explorer.views.figures.axes import category_ticks, title_below_toolbar
from explorer.views.figures.internals import CLICK_MARKER, f32, plotly_label


def attribution_heatmap(att: Attribution, target_text: str, position_text: str) -> go.Figure:
    """Heads (L, H) and MLPs (L,) on one signed colour scale; clicking a head cell gives [layer, head]."""
    heads = att.heads.numpy()
    mlp = att.mlp.numpy()[:, None]
    n_layers, n_heads = heads.shape
    bound = float(max(np.abs(heads).max(initial=0), np.abs(mlp).max(initial=0), 1e-6))
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[max(n_heads, 2), 1.4],
                        horizontal_spacing=0.02, subplot_titles=("heads", "MLP"))
    common = dict(colorscale="RdBu", reversescale=True, zmin=-bound, zmax=bound, zmid=0)
    fig.add_trace(go.Heatmap(z=f32(heads), x=f32(range(n_heads)), y=f32(range(n_layers)), **common,
                             colorbar=dict(title=dict(text="logit"), thickness=12),
                             hoverinfo="skip"), 1, 1)   # the click layer above reads out and is clicked
    fig.add_trace(go.Heatmap(z=f32(mlp), x=["MLP"], y=f32(range(n_layers)), **common, showscale=False,
                             hovertemplate="layer %{y} MLP<br>%{z:+.3f}<extra></extra>"), 1, 2)
    gy, gx = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    # heatmap cells cannot be selected, markers can: the invisible markers carry the hover and the click
    fig.add_trace(go.Scatter(x=f32(gx.ravel()), y=f32(gy.ravel()), mode="markers", hoverinfo="text",
                             hovertext=[f"layer {li} head {h}<br>{v:+.3f} · click to open its attention map"
                                        for li, h, v in zip(gy.ravel(), gx.ravel(), heads.ravel())],
                             customdata=np.stack([gy.ravel(), gx.ravel()], 1).astype(np.int32),
                             marker=dict(symbol="square", size=16, color=CLICK_MARKER), showlegend=False), 1, 1)
    pos, _, token = position_text.partition(" ")          # "4  is": position 4, token " is"
    where = f"{pos} “{plotly_label(token, 24)}”" if pos.isdigit() else plotly_label(position_text, 24)
    title = (f"Direct contribution to the logit of “{plotly_label(target_text, 20)}” at "
             f"{where} (logit {att.logit:.2f}; embedding {att.embedding:+.2f})")
    fig.update_layout(title_below_toolbar(dict(title=dict(text=title, font=dict(size=14)),
                                               margin=dict(l=10, r=10, t=10, b=10), uirevision="keep",
                                               height=int(min(900, max(320, 18 * n_layers + 120))),
                                               clickmode="event+select", dragmode=False), gap_px=28))   # subplot titles
    fig.update_yaxes(row=1, col=1, **category_ticks(range(n_layers)))
    fig.update_xaxes(row=1, col=1, **category_ticks(range(n_heads)))
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="head", row=1, col=1)
    return fig


def ranked_table(att: Attribution, top: int = 15) -> list[dict]:
    """Rows for a table: the parts that moved the logit most, largest first."""
    rows = []
    for r in att.ranked(top):
        where = "" if r["layer"] is None else f"layer {r['layer']}" + ("" if r["head"] is None else f" head {r['head']}")
        rows.append({"part": r["part"], "where": where, "contribution": round(r["value"], 4)})
    return rows


__all__ = ["attribution_heatmap", "ranked_table"]
