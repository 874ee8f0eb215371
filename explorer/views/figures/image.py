"""A heatmap as a PNG image trace: what a large map sends instead of its numbers.

Why: a 512 × 512 attention map as float32 is 1 MiB of numbers (1.4 MB as the base64 JSON Streamlit
sends), and Plotly then colours 262,144 cells in the browser on every switch. Coloured on the server
into a PNG (one byte per channel, deflated), the same map is ~100–200 kB and the browser only decodes
an image. The colour is all a map that size can show anyway: a cell is 1–2 screen pixels.

No imaging library: a PNG is a signature, a header chunk, deflated scanlines and an end chunk.
"""
from __future__ import annotations

import base64
import functools
import re
import struct
import zlib

import numpy as np
from plotly.colors import sample_colorscale


@functools.lru_cache(maxsize=16)
def colour_table(scale: str) -> np.ndarray:
    """(256, 3) uint8: the named Plotly colour scale sampled at 256 even steps."""
    rgb = sample_colorscale(scale, [i / 255 for i in range(256)], colortype="rgb")
    return np.asarray([[int(float(v)) for v in re.findall(r"[\d.]+", c)[:3]] for c in rgb], dtype=np.uint8)


def levels(z: np.ndarray, zmax: float) -> np.ndarray:
    """Values in [0, zmax] as uint8 colour levels 0–255 (NaN → 0)."""
    scaled = np.nan_to_num(z.astype(np.float32) / max(float(zmax), 1e-12), nan=0.0)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 → PNG (8-bit truecolour, no filter, deflate level 1: fast, and enough)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rgb.reshape(h, w * 3)], axis=1)   # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
            + chunk(b"IEND", b""))


def png_uri(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 → a data: URI that a Plotly image trace takes as its `source`."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def heatmap_png(z: np.ndarray, scale: str, zmax: float) -> str:
    """A data: URI of z coloured with `scale` over [0, zmax], one pixel per cell."""
    return png_uri(colour_table(scale)[levels(z, zmax)])                                # (H, W, 3)


__all__ = ["colour_table", "heatmap_png", "levels", "png_bytes", "png_uri"]
