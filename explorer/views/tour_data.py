"""The numbers the guided tour's text quotes, gathered from one capture's views.

Why a function of finished views (not of a Readout): the Readout memoises each view once and hands
them here, so the tour costs nothing the other views have not already paid.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explorer.record.capture import Capture
from explorer.views.lens_data import Trajectory
from explorer.views.residual_data import ResidualNorms


def tour_facts(cap: Capture, norms: ResidualNorms | None, summaries: dict[str, np.ndarray] | None,
               contrib: tuple[np.ndarray, np.ndarray] | None, final: Trajectory | None) -> dict[str, Any]:
    """Facts keyed by the names TOUR's text uses; a part the capture lacks (None) is simply absent."""
    facts: dict[str, Any] = {
        "model": cap.model_name, "n_tokens": cap.num_tokens, "n_layers": cap.num_layers, "n_heads": cap.num_heads,
        "n_kv_heads": cap.num_kv_heads, "group_size": max(1, cap.num_heads // max(1, cap.num_kv_heads)),
        "hidden": cap.hidden_size, "first_token": cap.token_texts[0], "last_token": cap.token_texts[-1],
        "n_norms": len(cap.norms),
    }
    if cap.last_logits is not None:
        p = torch.softmax(cap.last_logits.float(), -1)                       # (V,)
        top = int(p.argmax())
        facts.update(prediction=cap.token_text(top), prediction_prob=float(p[top]))
    if norms is not None:
        body = slice(1, None) if norms.z.shape[1] > 1 else slice(None)
        first, last = float(norms.z[0, body].mean()), float(norms.z[-1, body].mean())
        facts.update(norm_start=first, norm_end=last, norm_growth=last / first if first else float("nan"),
                     norm_first_token=float(norms.z[-1, 0]))
    if summaries is not None:
        facts.update(_head_facts(summaries, cap.attention_layers))
    if contrib is not None:
        attn, mlp = contrib
        facts.update(attn_peak_layer=int(attn.mean(-1).argmax()), mlp_peak_layer=int(mlp.mean(-1).argmax()))
    if final is not None:
        settled = next((final.layers[i] for i in range(len(final.layers)) if np.all(final.rank[i:] == 0)), None)
        facts.update(final_token=final.target_text, settle_layer=settled)
    return facts


def _head_facts(s: dict[str, np.ndarray], layers: list[int]) -> dict[str, Any]:
    """The strongest attention sink, and the sharpest most local head, from (L, H) summaries."""
    sink = s["first_token"]
    li, h = np.unravel_index(int(np.argmax(sink)), sink.shape)
    facts: dict[str, Any] = dict(sink_layer=layers[li], sink_head=int(h), sink_share=float(sink[li, h]))
    look = s["lookback"].copy()
    look[s["entropy"] > np.median(s["entropy"])] = np.inf     # sharp heads only
    li, h = np.unravel_index(int(np.argmin(look)), look.shape)
    facts.update(local_layer=layers[li], local_head=int(h), local_lookback=float(s["lookback"][li, h]))
    return facts


__all__ = ["tour_facts"]
