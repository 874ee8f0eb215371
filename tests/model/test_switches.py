"""Every switch is read by switches.py with one parser, so `false` means off wherever it is set."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer.model import switches
from explorer.model.embedded import default_cache_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("off", ["0", "false", "FALSE", "no", "off", " Off "])
def test_autoload_turns_off_with_any_false_word(monkeypatch, off):
    monkeypatch.setenv(switches.AUTOLOAD, off)
    assert switches.autoload_enabled() is False


@pytest.mark.parametrize("value", [None, "1", "true", "yes", "on", "", "maybe"])
def test_autoload_is_on_unless_turned_off(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(switches.AUTOLOAD, raising=False)
    else:
        monkeypatch.setenv(switches.AUTOLOAD, value)
    assert switches.autoload_enabled() is True


def test_hub_offline_reads_the_same_words(monkeypatch):
    for word, want in [("1", True), ("true", True), ("ON", True), ("0", False), ("false", False)]:
        monkeypatch.setenv(switches.HUB_OFFLINE, word)
        assert switches.hub_offline() is want


def test_cache_folder_follows_the_switch_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv(switches.CACHE, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(switches.CACHE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "llm-explorer"


def test_no_other_module_reads_an_explorer_variable():
    """The rule itself: EXPLORER_* names appear in code only in switches.py."""
    readers = [str(p.relative_to(ROOT)) for folder in ("explorer", "pages") for p in (ROOT / folder).rglob("*.py")
               if p.name != "switches.py" and ('environ.get("EXPLORER_' in p.read_text()
                                                 or "getenv(\"EXPLORER_" in p.read_text())]
    assert not readers, readers
