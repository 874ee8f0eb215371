"""One convention for sizes: binary units labelled KiB/MiB/GiB, decimal counts, used by every caller."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from explorer.views.units import GIB, MIB, fmt_bytes, fmt_count, gib

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n,text", [(0, "0 B"), (17, "17 B"), (1023, "1023 B"), (1024, "1 KiB"),
                                    (1536, "1.5 KiB"), (812 * MIB, "812 MiB"), (5.32 * GIB, "5.32 GiB"),
                                    (5.59e9, "5.21 GiB"), (999.7 * GIB, "1000 GiB"), (2 * 1024**4, "2 TiB"),
                                    (None, "—")])
def test_bytes_are_written_in_binary_units_with_three_significant_digits(n, text):
    assert fmt_bytes(n) == text


def test_counts_read_like_the_model_cards():
    assert fmt_count(8_030_261_248) == "8.03 B" and fmt_count(134_515_008) == "135 M"
    assert fmt_count(4096) == "4.1 K" and fmt_count(512) == "512"


def test_gib_converts_and_keeps_missing_values_missing():
    assert gib(3 * GIB) == 3 and gib(None) is None


def test_no_other_module_defines_its_own_byte_formatter_or_decimal_gigabytes():
    """Three fmt_bytes once disagreed (GB, GiB, MiB); a new one, or a `/ 1e9` shown as GB, brings that back."""
    sources = [p for d in ("explorer", "pages") for p in (ROOT / d).rglob("*.py") if p.name != "units.py"]
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if re.search(r"def fmt_bytes|def fmt_count|/ 1e9", p.read_text())]
    assert offenders == []


def test_no_module_of_explorer_writes_a_size_its_own_way():
    """The rule is explorer/model/units.py: a limit or budget in a message of any layer reads as the
    pages write sizes, so no module divides by 2**20 or 2**30 and prints "MiB"/"GiB" itself."""
    inline = re.compile(r"(2 ?\*\* ?(20|30)|1024 ?\*\* ?[23]|\bGIB\b|\bMIB\b|\bgib\b)[^\"']*:\.\d+[fg]\} ?(GiB|MiB|GB|MB)")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "explorer").rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if inline.search(line)]
    assert not found, found
