"""The residual view: the stream's norms, attention/MLP contributions, the norm modules."""
from __future__ import annotations

from explorer.views.figures.residual import contributions_figure, gain_heatmap, norm_stats_figure, residual_norm_heatmap
from explorer.views.readout import Readout
from pages._internals.drawing import Shown, explain


def residual_view(r: Readout, layer: int, head: int, token: int, shown: Shown) -> None:
    cap = r.capture
    if cap.embeddings is not None or cap.residual is not None:
        shown.figure("residual_norms", lambda: residual_norm_heatmap(r.residual_norms(), r.texts, token, layer),
                     key=(token, layer))
        explain("residual_norms")
        shown.table("residual_norms", r.residual_table)
    contrib = r.contributions()
    if contrib is not None:
        shown.figure("contributions", lambda: contributions_figure(*contrib, focus=token, layer=layer),
                     key=(token, layer))
        explain("contributions")
    rows = r.norm_rows()
    if rows:
        shown.figure("norm_stats", lambda: norm_stats_figure(rows, token, cap.num_layers), key=(token,))
        explain("norm_stats")
        shown.figure("norm_gain", lambda: gain_heatmap(rows), key=())
        explain("norm_gain")
        shown.table("norm_modules", r.norm_table)

