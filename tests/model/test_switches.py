"""Every switch is read by switches.py with one parser, so `false` means off wherever it is set."""
from __future__ import annotations

import ast
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


def test_no_other_module_reads_the_environment():
    """The rule itself: in explorer/ and pages/ only switches.py reads os.environ or os.getenv, so every
    variable (switches, the hub's own, the token) is named and parsed in one place."""
    names = ("environ", "getenv", "environb")
    readers = []
    for path in sorted(p for folder in ("explorer", "pages") for p in (ROOT / folder).rglob("*.py")):
        if path.name == "switches.py" and path.parent.name == "model":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            attribute = isinstance(node, ast.Attribute) and node.attr in names
            imported = isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in names for a in node.names)
            if attribute or imported:
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not readers, readers


def test_the_token_is_the_first_variable_set_and_scrubbed_from_messages(monkeypatch):
    from explorer.model.errors import env_token, user_message

    monkeypatch.delenv(switches.TOKENS[0], raising=False)
    monkeypatch.setenv(switches.TOKENS[1], "hf_second_variable_token")
    assert env_token().reveal() == "hf_second_variable_token"
    monkeypatch.setenv(switches.TOKENS[0], "hf_first_variable_token")
    assert env_token().reveal() == "hf_first_variable_token"
    assert user_message(RuntimeError("401 for hf_second_variable_token")) == "Unexpected error (RuntimeError): 401 for ***"


def test_the_hub_endpoint_defaults_to_huggingface_co(monkeypatch):
    monkeypatch.delenv(switches.HUB_ENDPOINT, raising=False)
    assert switches.hub_endpoint() == "https://huggingface.co"
    monkeypatch.setenv(switches.HUB_ENDPOINT, "http://127.0.0.1:9")
    assert switches.hub_endpoint() == "http://127.0.0.1:9"
