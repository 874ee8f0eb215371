"""AppTest of the Load & chat page: the embedded model loads, answers, and bad input is a message."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "chat.py")


@pytest.fixture
def no_autoload(monkeypatch, empty_registry):
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    return empty_registry


@pytest.mark.parametrize("off", ["0", "false"])
def test_page_without_model_offers_the_loader(monkeypatch, empty_registry, off):
    monkeypatch.setenv("EXPLORER_AUTOLOAD", off)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert empty_registry.current is None                                   # autoload stayed off
    assert at.selectbox(key="load_precision").value == "nf4"
    load = at.button(key="load_button")
    assert load.label == "Load" and not load.disabled


def test_missing_path_shows_a_message_and_the_app_keeps_serving(no_autoload):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.radio(key="load_kind").set_value("Local folder or .gguf file").run()
    at.text_input(key="load_path").set_value("/no/such/model/folder").run()
    at.button(key="load_button").click().run()
    assert not at.exception
    assert any("No such file or folder" in e.value for e in at.error)
    at.run()  # the session still serves
    assert not at.exception


@pytest.mark.slow
def test_embedded_model_loads_and_answers_in_the_page(no_autoload):
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    at.selectbox(key="load_precision").set_value("bf16").run()
    at.button(key="load_button").click().run()
    assert not at.exception
    assert any(m.value == "bf16" for m in at.metric)
    at.chat_input(key="chat_input").set_value("What is the capital of France?").run()
    assert not at.exception
    messages = at.session_state["chat_messages"]
    assert messages[-1]["role"] == "assistant" and "Paris" in messages[-1]["content"]
    assert at.slider(key="chat_rep").value == 1.1         # the page's default (the API's is 1.0)
    assert at.session_state["last_sequence_ids"]
    at.chat_input(key="chat_input").set_value("   ").run()
    assert any("empty" in e.value for e in at.error)
