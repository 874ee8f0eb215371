"""AppTest of loading as the user sees it: progress in the page, a load error in the main area until
dismissed, an RSS caption measured after the load, and the operator's local-path switch."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.model.loading import MemorySnapshot
from explorer.model.switches import LOCAL_PATHS_OFF

ROOT = Path(__file__).resolve().parents[2]
CHAT = str(ROOT / "pages" / "chat.py")
ARCHITECTURE = str(ROOT / "pages" / "architecture.py")
LOCAL = "Local folder or .gguf file"


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, empty_registry):
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    monkeypatch.delenv("EXPLORER_ALLOW_LOCAL_PATHS", raising=False)
    yield empty_registry


def load_path(at: AppTest, path: str, kind: str = LOCAL) -> AppTest:
    at.radio(key="load_kind").set_value(kind).run()
    key = "load_path" if kind == LOCAL else "load_hub_id"
    at.text_input(key=key).set_value(path)
    return at.button(key="load_button").click().run()


def test_load_error_shows_in_the_main_area_until_dismissed():
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    load_path(at, "/no/such/model/folder")
    assert not at.exception
    assert any("No such file or folder" in e.value for e in at.main.error)
    assert not at.sidebar.error                                     # not only in the sidebar, below the fold
    at.text_input(key="load_path").set_value("/something/else").run()   # other clicks keep it
    assert any("No such file or folder" in e.value for e in at.main.error)
    at.button(key="load_error_dismiss").click().run()
    assert not at.main.error and "load_error" not in at.session_state


def test_failed_load_says_the_previous_model_is_still_loaded(tiny_folder):
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    load_path(at, tiny_folder)
    load_path(at, "/no/such/model/folder")
    assert any("Still loaded: llama" in c.value for c in at.main.caption)


def test_weight_loading_shows_a_progress_bar_in_the_page(tiny_folder):
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    load_path(at, tiny_folder)
    assert not at.exception
    bars = at.main.get("progress")
    assert bars, "no st.progress in the main area"
    assert bars[-1].value == 100                                    # AppTest reports percent
    assert any("Loading weights" in (b.proto.text or "") for b in bars)
    assert not at.sidebar.get("progress")


def test_rss_caption_is_measured_after_the_load(tiny_folder, monkeypatch, empty_registry):
    """The fake snapshot says 1 GiB before a model is resident and 7 GiB after; the caption must say 7."""
    import pages._common as common

    monkeypatch.setattr(common, "memory_snapshot", lambda: MemorySnapshot(
        (7 if empty_registry.current is not None else 1) * 2**30, {}, {}))
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    assert any("process RSS 1 GiB" in c.value for c in at.sidebar.caption)
    load_path(at, tiny_folder)
    assert any("process RSS 7 GiB" in c.value for c in at.sidebar.caption)


def test_with_local_paths_off_no_path_source_and_one_message_for_any_path(tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("EXPLORER_ALLOW_LOCAL_PATHS", "0")
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    assert LOCAL not in at.radio(key="load_kind").options
    answers = []
    for path in (tiny_folder, "/no/such/model/folder", str(tmp_path), "/etc/passwd", "~/x.gguf", "../secrets"):
        load_path(at, path, kind="Hub id")
        assert not at.exception
        answers.append([e.value for e in at.main.error])
        at.button(key="load_error_dismiss").click().run()
    assert all(a == answers[0] for a in answers), answers          # no oracle: the same answer every time
    assert LOCAL_PATHS_OFF in answers[0][0]
    assert at.session_state["load_kind"] == "Hub id"


def test_with_local_paths_on_today_messages_stay(tmp_path):
    at = AppTest.from_file(CHAT, default_timeout=120).run()
    assert LOCAL in at.radio(key="load_kind").options
    load_path(at, str(tmp_path))
    assert any("has no config.json" in e.value for e in at.main.error)


def test_architecture_page_hides_the_path_source_when_paths_are_off(monkeypatch):
    at = AppTest.from_file(ARCHITECTURE, default_timeout=120).run()
    assert "Local config.json or model folder" in at.selectbox(key="arch_source").options
    monkeypatch.setenv("EXPLORER_ALLOW_LOCAL_PATHS", "0")
    at = AppTest.from_file(ARCHITECTURE, default_timeout=120).run()
    assert not at.exception
    assert "Local config.json or model folder" not in at.selectbox(key="arch_source").options


def test_a_failed_restore_tells_the_page_no_model_is_loaded(tiny_folder, monkeypatch, empty_registry):
    from explorer.model import loading

    at = AppTest.from_file(CHAT, default_timeout=120).run()
    load_path(at, tiny_folder)
    assert empty_registry.current is not None

    def broken(*args, **kwargs):  # a fault in the new load and in the restore of the old one
        raise OSError("injected fault")

    monkeypatch.setattr(loading, "_from_pretrained", broken)
    load_path(at, tiny_folder)
    assert not at.exception
    assert empty_registry.current is None
    assert any("no model is loaded now" in e.value for e in at.main.error)
    assert not any("Still loaded" in c.value for c in at.main.caption)
