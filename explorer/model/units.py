"""How sizes and counts are written, everywhere: messages of every layer, pages, figures, the
comparison report, the CLI. At the bottom (explorer/model) so that a limit or a budget told in
explorer/model or explorer/record reads as the pages write it; explorer/views/units.py passes it on.

One convention: bytes in binary units (KiB, MiB, GiB, TiB = powers of 1024), labelled as such,
because that is what GPU and RAM sizes and `torch.cuda.memory_allocated` mean in practice; a
figure in "GB" beside one in "GiB" for the same load disagree by 7%. Parameter counts are decimal
(K, M, B), as model names write them ("8B").
"""
from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
_BYTE_UNITS = ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))


def fmt_bytes(n: float | None) -> str:
    """'5.32 GiB', '812 MiB', '17 B'; three significant digits; None (not measured) is '—'."""
    if n is None:
        return "—"
    for size, unit in _BYTE_UNITS:
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def gib(n: float | None) -> float | None:
    """Bytes as a number of GiB (for table columns and chart axes labelled "GiB")."""
    return None if n is None else n / GIB


def fmt_count(n: float) -> str:
    """'8.03 B', '135 M', '4.1 K', '512': decimal, three significant digits."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if abs(n / size) < 100 else f"{n / size:.0f} {unit}"
    return f"{int(n)}"


__all__ = ["GIB", "KIB", "MIB", "TIB", "fmt_bytes", "fmt_count", "gib"]
