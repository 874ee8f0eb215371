"""The operator's local-path switch: off = presets and hub ids only, with no answer that says what
exists on the server's disk; on (the default) = today's messages."""
from __future__ import annotations

import pytest

from explorer.model.loading import LoadConfig, LoadError, preflight
from explorer.model.preflight import resolve_source
from explorer.model.switches import LOCAL_PATHS_OFF, env_flag, local_paths_allowed
from tests.tiny_models import save_tiny_folder


def refusal(source: str) -> str:
    with pytest.raises(LoadError) as err:
        resolve_source(LoadConfig(source=source, allow_local_paths=False))
    return str(err.value)


def test_the_switch_is_on_unless_the_operator_turns_it_off(monkeypatch):
    monkeypatch.delenv("EXPLORER_ALLOW_LOCAL_PATHS", raising=False)
    assert local_paths_allowed()
    for off in ("0", "false", "no", "off", " OFF "):
        monkeypatch.setenv("EXPLORER_ALLOW_LOCAL_PATHS", off)
        assert not local_paths_allowed()
    monkeypatch.setenv("EXPLORER_ALLOW_PICKLE", "maybe")
    assert env_flag("EXPLORER_ALLOW_PICKLE") is False


def test_every_path_gets_the_same_refusal_whether_it_exists_or_not(tmp_path, embedded_tokenizer):
    model = save_tiny_folder("llama", tmp_path / "model", embedded_tokenizer)
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    sources = [str(model), str(tmp_path / "empty"), str(tmp_path / "x.gguf"), str(tmp_path / "nothing"),
               "/etc/passwd", "~", "./model", "../model", "a/b/c", "x.gguf", "C:\\models", "owner/name with space"]
    assert {refusal(s) for s in sources} == {LOCAL_PATHS_OFF}


def test_hub_ids_and_presets_still_resolve_when_paths_are_off():
    assert resolve_source(LoadConfig(source="Qwen/Qwen2.5-0.5B", allow_local_paths=False)).kind == "hub"
    assert resolve_source(LoadConfig(source="gpt2", allow_local_paths=False)).kind == "hub"
    assert resolve_source(LoadConfig(source="embedded", allow_local_paths=False)).kind == "embedded"


def test_a_hub_id_named_like_a_folder_in_the_working_directory_never_reads_that_folder(tmp_path, monkeypatch, embedded_tokenizer):
    """Offline, owner/name with and without a same-named folder under the cwd get the same hub answer."""
    save_tiny_folder("llama", tmp_path / "owner" / "here", embedded_tokenizer)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    answers = []
    for name in ("owner/here", "owner/gone"):
        with pytest.raises(LoadError) as err:
            preflight(LoadConfig(source=name, allow_local_paths=False))
        answers.append(str(err.value).replace(name, "NAME"))
    assert answers[0] == answers[1] and "hub" in answers[0]


def test_with_paths_on_the_messages_tell_what_is_wrong(tmp_path):
    with pytest.raises(LoadError, match="No such file or folder"):
        resolve_source(LoadConfig(source=str(tmp_path / "nothing")))
    with pytest.raises(LoadError, match="no config.json"):
        resolve_source(LoadConfig(source=str(tmp_path)))
