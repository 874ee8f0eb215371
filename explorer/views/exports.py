"""What the internals page hands out as downloads: tables (one DataFrame per view) and the capture file."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from explorer.analyse.capture_bundle import save_with_results
from explorer.analyse.derived import Derived
from explorer.analyse.lens import ModelRef
from explorer.analyse.pca import Projection
from explorer.record.capture_data import Capture
from explorer.views.lens_data import FILE_LENS_K, LensWindow, full_lens
from explorer.views.residual_data import NormRow, ResidualNorms
from explorer.views.text import visible_whitespace


def capture_file_bytes(cap: Capture, results: Derived, source: ModelRef, include_lens: bool = True) -> bytes:
    """The capture as a file (explorer.record.capture_file format) with the results derived so far,
    and the full logit lens when asked and the model is there, so the file's lens view works
    without the model. Applies the LM head: the app runs it on the model worker."""
    if include_lens:
        full_lens(cap, results, source, FILE_LENS_K)        # kept in results, saved with them
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        save_with_results(cap, path, results if include_lens else Derived(results.summaries, {}, dict(results.vocab)))
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def tokens_table(cap: Capture) -> pd.DataFrame:
    """Hidden characters shown as ⟨U+XXXX⟩ and whitespace drawn, as everywhere else token text is shown."""
    return pd.DataFrame({"position": range(cap.num_tokens), "id": cap.token_ids.tolist(),
                         "token": [visible_whitespace(t) for t in cap.tokens],
                         "text": [visible_whitespace(t) for t in cap.token_texts]})


def head_table(cap: Capture, summaries: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (layer, head) from head summaries shaped (L, H)."""
    s = summaries
    rows = [{"layer": layer, "head": h, "kv_head": cap.kv_head_of[h],
             "entropy": float(s["entropy"][li, h]), "first_token_share": float(s["first_token"][li, h]),
             "lookback": float(s["lookback"][li, h])}
            for li, layer in enumerate(cap.attention_layers) for h in range(cap.num_heads)]
    return pd.DataFrame(rows)


def residual_table(norms: ResidualNorms) -> pd.DataFrame:
    cols = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in norms.spans]
    return pd.DataFrame(norms.z, index=norms.row_names, columns=cols).rename_axis("residual after")


def norm_table(rows: list[NormRow]) -> pd.DataFrame:
    out = []
    for r in rows:
        w = r.weight
        out.append({"module": r.name, "layer": r.layer, "role": r.role,
                    "input_rms_mean": float(r.input_rms.mean()), "output_mean": float(r.output_mean.mean()),
                    "output_std": float(r.output_std.mean()),
                    "gain_mean": float(w.mean()) if w is not None else None,
                    "gain_min": float(w.min()) if w is not None else None,
                    "gain_max": float(w.max()) if w is not None else None})
    return pd.DataFrame(out)


def lens_table(window: LensWindow, texts: list[str]) -> pd.DataFrame:
    rows = [{"layer": layer, "position": pos, "input_token": visible_whitespace(texts[pos]), "rank": r,
             "token": visible_whitespace(window.texts[li][pi][r]), "probability": float(window.probs[li, pi, r])}
            for li, layer in enumerate(window.layers) for pi, pos in enumerate(window.positions)
            for r in range(window.probs.shape[-1])]
    return pd.DataFrame(rows)


def projection_table(proj: Projection, texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"position": proj.positions, "text": [visible_whitespace(texts[p]) for p in proj.positions],
                         "pc1": proj.coords[:, 0].numpy(), "pc2": proj.coords[:, 1].numpy()})


__all__ = ["capture_file_bytes", "head_table", "lens_table", "norm_table", "projection_table", "residual_table",
           "tokens_table"]
