"""Sizes and counts as the views write them (the rule itself: explorer/model/units.py), and table cells.

Pages, figures, the comparison report and the CLI import the units from here; a table without raw
"None" cells is a matter of presentation, so `table_cells` lives here and not in the model layer.
"""
from __future__ import annotations

from explorer.model.units import GIB, KIB, MIB, TIB, fmt_bytes, fmt_count, gib

MISSING = "—"        # a value there is no number for (the reference against itself, a run that failed)


def table_cells(rows: list[dict]) -> list[dict]:
    """Rows for a table without a raw "None": a column with gaps shows them as "—" and its numbers
    written short (4 significant digits); a column without gaps keeps its numbers (sortable,
    formatted by the table's column settings)."""
    gaps = {k for row in rows for k, v in row.items() if v is None or (isinstance(v, float) and v != v)}

    def cell(v):
        if v is None or (isinstance(v, float) and v != v):
            return MISSING
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return [{k: cell(v) if k in gaps else v for k, v in row.items()} for row in rows]


__all__ = ["GIB", "KIB", "MIB", "MISSING", "TIB", "fmt_bytes", "fmt_count", "gib", "table_cells"]
