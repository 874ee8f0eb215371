"""Bad input through the app (AppTest): a message in the main area, the page keeps drawing, the
session keeps serving, and the resident model is still there with the same logits."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.model.loading import LoadConfig
from tests import bad_inputs as B

PAGES = Path(__file__).resolve().parents[2] / "pages"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, embedded_tokenizer):
    root = tmp_path_factory.mktemp("app_bad")
    good = B.make_good(root, embedded_tokenizer)
    made = {name: make(good, root / name) for name, make in B.FOLDER_MAKERS.items()}
    made["good"] = good
    return made


@pytest.fixture
def resident(empty_registry, folders, monkeypatch):
    """The app's registry holding a tiny model, and its reference logits."""
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "0")
    empty_registry.load(LoadConfig(source=str(folders["good"]), precision="fp32"))
    return empty_registry, empty_registry.current, B.logits_of(empty_registry.current)


def assert_still_serving(at, resident) -> None:
    reg, model, reference = resident
    assert not at.exception
    at.run()  # the session still serves
    assert not at.exception
    assert reg.current is model, "the resident model was replaced or lost"
    assert torch.equal(B.logits_of(reg.current), reference)


CHAT_CASES = [  # id, source kind, value (str or a key of folders), phrase
    ("5000-char hub id", "Hub id", "a" * 5000, "too long"),
    ("owner/na$me", "Hub id", "owner/na$me", "not a valid hub id"),
    ("-/-", "Hub id", "-/-", "not a valid hub id"),
    ("NUL byte", "Hub id", "abc\x00def", "control characters"),
    ("5000-char path", "Local folder or .gguf file", "/" + "p" * 5000, "too long"),
    ("missing path", "Local folder or .gguf file", "/no/such/model", "No such file or folder"),
    ("config.json only", "Local folder or .gguf file", "config_only", "has no weights"),
    ("truncated weights", "Local folder or .gguf file", "truncated_weights", "truncated"),
    ("mismatched weights", "Local folder or .gguf file", "mismatched_weights", "do not fit"),
    ("BERT", "Local folder or .gguf file", "bert", "encoder"),
    ("pickle only", "Local folder or .gguf file", "pickle_only", "pytorch_model.bin"),
    ("broken tokenizer", "Local folder or .gguf file", "broken_tokenizer", "tokenizer"),
]


@pytest.mark.parametrize("case,kind,value,phrase", CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
def test_a_bad_load_in_the_chat_page_is_a_main_area_message(resident, folders, case, kind, value, phrase):
    at = AppTest.from_file(str(PAGES / "chat.py"), default_timeout=120)
    at.run()
    at.radio(key="load_kind").set_value(kind).run()
    key = "load_hub_id" if kind == "Hub id" else "load_path"
    at.text_input(key=key).set_value(str(folders[value]) if value in folders else value).run()
    at.button(key="load_button").click().run()
    assert not at.exception
    messages = [e.value for e in at.main.error]
    assert any(phrase in m for m in messages), messages
    assert all("Traceback" not in m for m in messages)
    assert at.subheader, "the page kept drawing the model card"
    assert_still_serving(at, resident)


ARCH_CASES = [
    ("path 5000 chars", "path", "arch_path", "/" + "q" * 5000, "too long"),
    ("path with NUL", "path", "arch_path", "/tmp/a\x00b", "control characters"),
    ("hub 5000 chars", "hub", "arch_hub", "o/" + "n" * 4998, "too long"),
    ("hub owner/na$me", "hub", "arch_hub", "owner/na$me", "not a valid hub id"),
    ("hub offline (LocalEntryNotFound)", "hub", "arch_hub", "owner/name", "not in the local cache"),
    ("hub 500", "hub", "arch_hub", "owner/other", "server error (500)"),
]


@pytest.mark.parametrize("case,source,key,value,phrase", ARCH_CASES, ids=[c[0] for c in ARCH_CASES])
def test_bad_input_in_the_architecture_page_is_a_message(resident, monkeypatch, case, source, key, value, phrase):
    kind = "server" if "500" in case else "offline"
    B.patch_hub(monkeypatch, kind)
    import huggingface_hub

    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: (_ for _ in ()).throw(B.hub_failure("offline")) if k.get("local_files_only")
                        else real(*a, **k))
    at = AppTest.from_file(str(PAGES / "architecture.py"), default_timeout=120)
    at.run()
    at.selectbox(key="arch_source").set_value(source).run()
    at.text_input(key=key).set_value(value).run()
    assert not at.exception
    messages = [e.value for e in at.main.error]
    assert any(phrase in m for m in messages), messages
    assert_still_serving(at, resident)


def test_the_internals_page_says_why_a_turn_of_a_replaced_model_is_not_captured(resident):
    reg, model, _ = resident
    at = AppTest.from_file(str(PAGES / "internals.py"), default_timeout=120)
    at.session_state["last_sequence_ids"] = [1, 2, 3, 4]
    at.session_state["last_sequence_load_id"] = model.load_id - 1  # made by an earlier model
    at.session_state["chat_messages"] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    at.run()
    assert not at.exception
    assert any("since been replaced" in i.value for i in at.info)
    assert_still_serving(at, resident)


def test_the_chat_page_offers_auto_compute_and_says_which_was_chosen(resident):
    at = AppTest.from_file(str(PAGES / "chat.py"), default_timeout=120)
    at.run()
    assert at.selectbox(key="load_compute").value == "auto"
    assert "auto" in at.selectbox(key="load_compute").options
    assert not at.exception


def _open_upload_script(path: str) -> None:
    from pathlib import Path as _Path

    from pages._internals.settings import open_upload

    open_upload("tampered.safetensors", _Path(path).read_bytes())


def _tampered(tmp_path, edit) -> str:
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, capture
    from explorer.record.capture_file import META_KEY, save_capture
    from tests.tiny_models import tiny_model

    good = tmp_path / "good.capture"
    ids = torch.randint(3, 256, (6,), generator=torch.Generator().manual_seed(0))
    save_capture(capture(tiny_model("llama"), None, ids, CaptureOptions(parts=DEFAULT_PARTS | {"components"})), good)
    with safe_open(str(good), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        meta = _json.loads(f.metadata()[META_KEY])
    edit(tensors, meta)
    bad = tmp_path / "bad.capture"
    save_file(tensors, str(bad), metadata={META_KEY: _json.dumps(meta)})
    return str(bad)


TAMPERED_UPLOADS = [  # issue 21 item 1: the three ways that crashed the Attribution view
    ("comp.z cut", lambda t, m: t.__setitem__("comp.z", t["comp.z"][:, :, :2].contiguous()), "comp.z has shape"),
    ("comp.w_o dropped", lambda t, m: t.pop("comp.w_o"), "comp.w_o is missing"),
    ("norm entry with no tensor", lambda t, m: m["components"]["norms"].__setitem__("1", {"center": False,
                                                                                        "bias": False}),
     "has no tensor"),
]


@pytest.mark.parametrize("case,edit,phrase", TAMPERED_UPLOADS, ids=[c[0] for c in TAMPERED_UPLOADS])
def test_a_tampered_capture_upload_is_one_sentence_in_the_internals_page(resident, tmp_path, case, edit, phrase):
    from pages import _state

    at = AppTest.from_function(_open_upload_script, args=(_tampered(tmp_path, edit),), default_timeout=120).run()
    assert not at.exception
    message = at.session_state[_state.OPEN_ERROR]
    shown = message.replace("\\", "")     # escaped for Markdown
    assert phrase in shown and "is not a valid capture file" in shown and "Traceback" not in message and str(tmp_path) not in message
    assert _state.ON_SCREEN not in at.session_state          # nothing from the file reaches a view
    page = AppTest.from_file(str(PAGES / "internals.py"), default_timeout=120)
    page.session_state[_state.OPEN_ERROR] = message
    page.session_state[_state.VIEW] = "attribution"
    page.run()
    assert not page.exception
    assert any(phrase in e.value.replace("\\", "") for e in page.main.error)
    assert_still_serving(page, resident)


@pytest.fixture
def fresh_server_loads():
    from pages._common import server_loads

    server_loads.clear()
    yield server_loads()
    server_loads.clear()


def test_autoload_does_not_fire_once_a_model_was_chosen_on_this_server(empty_registry, fresh_server_loads,
                                                                       monkeypatch):
    """Issue 21 item 3: another session chose a model (and unloaded it): this page must not load
    the embedded default over that choice."""
    monkeypatch.setenv("EXPLORER_AUTOLOAD", "1")
    fresh_server_loads.mark_chosen()
    at = AppTest.from_file(str(PAGES / "chat.py"), default_timeout=120).run()
    assert not at.exception
    assert empty_registry.current is None
    assert any("No model is loaded" in i.value for i in at.info)


def test_an_autoload_queued_behind_a_chosen_load_does_nothing_on_the_worker(empty_registry, fresh_server_loads,
                                                                            folders):
    """The check is repeated on the worker: an autoload that was queued before another session chose
    a model finds the choice there and loads nothing."""
    import threading

    from pages import _common

    worker = _common.model_worker()
    gate, started = threading.Event(), threading.Event()
    worker.submit(lambda loaded, req: (started.set(), gate.wait(30)), "other", kind="exclusive", load_id=None,
                  needs_model=False)
    assert started.wait(30)
    results = []

    class Status:
        def write(self, *a, **k): pass
        def empty(self): return self
        def progress(self, *a, **k): pass

    t = threading.Thread(target=lambda: results.append(_common._load_on_worker(
        LoadConfig(source=str(folders["good"]), precision="fp32"), True, Status())))
    t.start()
    fresh_server_loads.mark_chosen()           # B chose a model while A's autoload waited in the queue
    gate.set()
    t.join(60)
    assert results == [None] and empty_registry.current is None
