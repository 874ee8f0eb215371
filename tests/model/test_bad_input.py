"""Bad input through the API: a typed error with a clear message, and the resident model untouched.

Table-driven: each row is a source or config that once reached a traceback or cost the resident
model (issue 13). Every case loads through the registry with a tiny model resident, and asserts
the error type, a phrase of its message, no traceback text, and the same logits afterwards.
"""
from __future__ import annotations

import dataclasses
import json
import threading

import pytest
import torch
from transformers import PreTrainedModel

from explorer.model import errors as E
from explorer.model import load_config, loading, preflight
from explorer.model.errors import Secret, user_message
from explorer.model.generation import GenerateOptions, conversation, generate, generate_batch, stream_generate
from explorer.model.loading import LoadConfig, ModelRegistry, load_model
from explorer.model.switches import TOKENS, operator_switches
from tests import bad_inputs as B


@pytest.fixture(scope="module")
def folders(tmp_path_factory, embedded_tokenizer):
    root = tmp_path_factory.mktemp("bad")
    good = B.make_good(root, embedded_tokenizer)
    made = {name: make(good, root / name) for name, make in B.FOLDER_MAKERS.items()}
    made["good"] = good
    return made


@pytest.fixture(scope="module")
def resident(folders):
    """A registry holding a tiny fp32 model, and that model's reference logits."""
    reg = ModelRegistry()
    reg.load(LoadConfig(source=str(folders["good"]), precision="fp32"))
    return reg, B.logits_of(reg.current)


def assert_resident(reg, reference) -> None:
    assert reg.current is not None, "the resident model was lost"
    assert torch.equal(B.logits_of(reg.current), reference)


def assert_clean(message: str) -> None:
    assert message and "Traceback" not in message and "\x1b" not in message
    assert len(message) < 700


LONG = "a" * 5000
SOURCE_CASES = [  # id, source (str, or a key of `folders`), expected type, phrase
    ("5000-char hub id", LONG, E.BadSource, "too long"),
    ("5000-char path", "/" + "b" * 5000, E.BadSource, "too long"),
    ("dollar in hub id", "owner/na$me", E.BadSource, "not a valid hub id"),
    ("NUL byte", "abc\x00def", E.BadSource, "control characters"),
    ("dash/dash", "-/-", E.BadSource, "not a valid hub id"),
    ("200-char hub id", "o/" + "n" * 198, E.BadSource, "96"),
    ("three slashes", "a/b/c", E.BadSource, "not a valid hub id"),
    ("double dash", "owner/na--me", E.BadSource, "'--'"),
    ("empty", "   ", E.BadSource, "No model given"),
    ("missing path", "/no/such/model/folder", E.BadSource, "No such file or folder"),
    ("folder without config", "no_config", E.BadSource, "no config.json"),
    ("a text file", "text_file", E.BadSource, "not a .gguf"),
    ("config.json only", "config_only", E.BadWeights, "has no weights"),
    ("truncated weights", "truncated_weights", E.BadWeights, "truncated"),
    ("garbage header", "garbage_header", E.BadWeights, "not valid JSON"),
    ("huge declared header", "huge_header", E.BadWeights, "corrupt or truncated"),
    ("weights of another shape", "mismatched_weights", E.BadWeights, "do not fit its config"),
    ("pickle only (.bin)", "pickle_only", E.PickleRefused, "pytorch_model.bin"),
    ("pickle only (.pt)", "pt_only", E.PickleRefused, "model.pt"),
    ("remote code", "remote_code", E.RemoteCodeRefused, "EXPLORER_ALLOW_REMOTE_CODE"),
    ("BERT (an encoder)", "bert", E.NotCausal, "encoder"),
    ("broken tokenizer", "broken_tokenizer", E.TokenizerError, "tokenizer"),
    ("not a GGUF", "fake_gguf", E.BadWeights, "GGUF signature"),
    ("broken config.json", "bad_config_json", E.BadConfigFile, "not valid JSON"),
    # issue 21 item 6: sizes bounded before anything is parsed, and the limit said
    ("1 GiB config.json", "huge_config", E.FileTooLarge, "config.json is 1 GiB; the limit is 16 MiB"),
    ("200 MiB tokenizer.json", "huge_tokenizer", E.FileTooLarge, "tokenizer.json is 200 MiB; the limit is 128 MiB"),
    ("17 MiB generation_config", "huge_generation_config", E.FileTooLarge, "generation_config.json is 17 MiB"),
    ("config nested 100,000 deep", "deep_config", E.BadConfigFile, "nests deeper than 64 levels"),
    ("20 MiB index", "huge_index", E.FileTooLarge, "model.safetensors.index.json is 20 MiB"),
]


@pytest.mark.parametrize("case,source,kind,phrase", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_bad_source_is_a_typed_error_and_the_resident_model_stays(resident, folders, case, source, kind, phrase):
    reg, reference = resident
    before = reg.current
    source = str(folders[source]) if source in folders else source
    with pytest.raises(kind) as info:
        reg.load(LoadConfig(source=source, precision="fp32"))
    message = user_message(info.value)
    assert phrase in message
    assert_clean(message)
    assert reg.current is before, "preflight must refuse before the swap"
    assert_resident(reg, reference)


CONFIG_CASES = [
    ("compute dtype int4", dict(compute_dtype="int4"), "auto, bf16, fp16, fp32"),
    ("precision int3", dict(precision="int3"), "nf4, fp4, int8, bf16, fp16, fp32"),
    ("device map", dict(device_map="gpu7"), "balanced"),
    ("attention implementation", dict(attn_implementation="magic"), "sdpa"),
    ("flash attention on this machine", dict(attn_implementation="flash_attention_2"), "flash_attention_2 needs"),
    ("source not text", dict(source=123), "must be text"),
    ("double_quant not a bool", dict(double_quant="yes"), "True or False"),
]


@pytest.mark.parametrize("case,fields,phrase", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_lists_the_choices_and_the_resident_model_stays(resident, folders, case, fields, phrase):
    reg, reference = resident
    before = reg.current
    with pytest.raises(E.BadConfig) as info:
        reg.load(LoadConfig(**{"source": str(folders["good"]), **fields}))
    assert phrase in str(info.value)
    assert_clean(user_message(info.value))
    assert reg.current is before
    assert_resident(reg, reference)


HUB_CASES = [
    ("gated", E.GatedRepo, "gated"),
    ("unknown", E.UnknownRepo, "No model called"),
    ("server", E.HubError, "server error (500)"),
    ("server_wrapped", E.HubError, "not your network"),
    ("bad_token", E.BadToken, "401"),
    ("offline", E.NoNetwork, "no network"),
]


@pytest.mark.parametrize("kind,error,phrase", HUB_CASES, ids=[c[0] for c in HUB_CASES])
def test_hub_failures_are_told_apart(resident, monkeypatch, kind, error, phrase):
    reg, reference = resident
    B.patch_hub(monkeypatch, kind)
    with pytest.raises(error) as info:
        reg.load(LoadConfig(source="owner/name", precision="fp32", token="hf_SECRETSECRET123"))
    message = user_message(info.value)
    assert phrase in message and "hf_SECRETSECRET123" not in message
    assert_resident(reg, reference)


def test_gated_preset_without_a_token_is_refused_before_the_hub(resident, monkeypatch):
    reg, reference = resident
    for name in TOKENS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(E.GatedRepo):
        reg.load(LoadConfig(source="llama-3.1-8b-instruct"))
    assert_resident(reg, reference)


# --------------------------------------------------------------------------- faults after the swap


def _fail_once(original, exc):
    state = {"armed": True}

    def wrapper(*args, **kwargs):
        if state["armed"]:
            state["armed"] = False
            raise exc
        return original(*args, **kwargs)

    return wrapper


FAULTS = [  # where, how to patch (monkeypatch, exception)
    ("memory snapshot", lambda mp, exc: mp.setattr(loading, "memory_snapshot", _fail_once(loading.memory_snapshot, exc))),
    ("from_pretrained", lambda mp, exc: mp.setattr(loading, "_from_pretrained", _fail_once(loading._from_pretrained, exc))),
    ("LoadedModel", lambda mp, exc: mp.setattr(loading, "LoadedModel", _fail_once(loading.LoadedModel, exc))),
    ("footprint", lambda mp, exc: mp.setattr(PreTrainedModel, "get_memory_footprint",
                                             _fail_once(PreTrainedModel.get_memory_footprint, exc))),
    ("device map summary", lambda mp, exc: mp.setattr(loading, "_device_map_summary",
                                                      _fail_once(loading._device_map_summary, exc))),
]


@pytest.mark.parametrize("where,patch", FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize("exc", [KeyError("dtype"), RuntimeError("\x1b[1mweights_only\x1b[0m load failed"),
                                 torch.OutOfMemoryError("CUDA out of memory")], ids=["KeyError", "ansi", "oom"])
def test_a_fault_after_the_swap_restores_the_previous_model(folders, monkeypatch, where, patch, exc):
    reg = ModelRegistry()
    reg.load(LoadConfig(source=str(folders["good"]), precision="fp32"))
    reference = B.logits_of(reg.current)
    old = reg.current
    patch(monkeypatch, exc)
    with pytest.raises(E.LoadError) as info:
        reg.load(LoadConfig(source=str(folders["good"]), precision="bf16"))
    assert_clean(user_message(info.value))
    assert old.retired and reg.current is not old
    assert reg.current.precision == "fp32"
    assert_resident(reg, reference)


# --------------------------------------------------------------------------- a replaced model


def test_a_request_with_a_replaced_model_says_run_again(folders):
    reg = ModelRegistry()
    old = reg.load(LoadConfig(source=str(folders["good"]), precision="fp32"))
    new = reg.load(LoadConfig(source=str(folders["good"]), precision="bf16"))
    assert new.load_id > old.load_id
    options = GenerateOptions(max_new_tokens=2)
    for call in (lambda: generate(old, conversation("hi"), options),
                 lambda: stream_generate(old, conversation("hi"), options),
                 lambda: generate_batch(old, [conversation("a"), conversation("b")], options),
                 old.ensure_current):
        with pytest.raises(E.ModelReplaced, match="run it again"):
            call()
    new.ensure_current()


def test_a_swap_during_a_stream_ends_it_with_model_replaced_not_attribute_error(folders):
    reg = ModelRegistry()
    old = reg.load(LoadConfig(source=str(folders["good"]), precision="fp32"))
    stream = stream_generate(old, conversation("hi"), GenerateOptions(max_new_tokens=8))
    swapped = threading.Event()

    def swap():
        reg.load(LoadConfig(source=str(folders["good"]), precision="bf16"))
        swapped.set()

    with pytest.raises(E.ModelReplaced):
        for i, _ in enumerate(stream):
            if i == 0:
                swap()
    assert swapped.is_set() and reg.current.precision == "bf16"


# --------------------------------------------------------------------------- the token and the switches


def test_the_token_is_masked_in_repr_str_and_asdict(monkeypatch):
    cfg = LoadConfig(token="hf_TOPSECRET_abc123")
    assert isinstance(cfg.token, Secret)
    dumped = dataclasses.asdict(cfg)
    assert isinstance(dumped["token"], Secret)
    for text in (repr(cfg), str(cfg), repr(dumped), str(dumped), json.dumps(dumped, default=str)):
        assert "hf_TOPSECRET_abc123" not in text
    cfg.token = "hf_OTHER_secret_99"
    assert isinstance(cfg.token, Secret) and cfg.token.reveal() == "hf_OTHER_secret_99"


@pytest.mark.parametrize("var", ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"])
def test_messages_scrub_tokens_from_the_environment_and_secrets(monkeypatch, var):
    monkeypatch.setenv(var, "hf_fromENVIRONMENT42")
    Secret("hf_from_streamlit_secrets_7")
    exc = RuntimeError("401 for hf_fromENVIRONMENT42 and hf_from_streamlit_secrets_7 \x1b[31mred\x1b[0m")
    message = user_message(exc)
    assert "hf_fromENVIRONMENT42" not in message and "hf_from_streamlit_secrets_7" not in message
    assert "\x1b" not in message and "red" in message and "RuntimeError" in message


def test_operator_switches_are_read_in_one_place(monkeypatch):
    monkeypatch.setenv("EXPLORER_ALLOW_PICKLE", "1")
    monkeypatch.setenv("EXPLORER_ALLOW_REMOTE_CODE", "no")
    switches = operator_switches()
    assert switches.allow_pickle and not switches.trust_remote_code


def test_pickle_is_loaded_only_when_the_operator_allows_it(folders, embedded_tokenizer, tmp_path):
    from tests.tiny_models import save_tiny_folder

    folder = save_tiny_folder("llama", tmp_path / "pickled", embedded_tokenizer, safe_serialization=False)
    with pytest.raises(E.PickleRefused, match="pytorch_model.bin"):
        load_model(LoadConfig(source=str(folder), precision="fp32"))
    loaded = load_model(LoadConfig(source=str(folder), precision="fp32", allow_pickle=True))
    assert loaded.model is not None


def test_compute_dtype_auto_follows_the_device():
    precision, compute, notices = load_config.plan_precision(LoadConfig(precision="nf4"))
    expected = "bf16" if torch.cuda.is_available() or load_config.cpu_has_native_bf16() else "fp32"
    assert compute == expected and not notices
    assert load_config.plan_precision(LoadConfig(precision="nf4", compute_dtype="bf16"))[1] == "bf16"


@pytest.mark.parametrize("answer,error,phrase", [
    ("not_safetensors", E.PickleRefused, "EXPLORER_ALLOW_PICKLE"),
    ("wrong_shapes", E.BadWeights, "do not fit its config"),
    ("server", E.HubError, "server error"),
], ids=["pickle-only repo", "shapes from remote headers", "hub 500 on headers"])
def test_hub_weights_are_checked_from_remote_headers_before_the_swap(monkeypatch, answer, error, phrase):
    import huggingface_hub
    from huggingface_hub.errors import NotASafetensorsRepoError
    from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

    config = B.tiny_llama_config()

    def metadata(repo_id, **kwargs):
        if answer == "not_safetensors":
            raise NotASafetensorsRepoError("no safetensors")
        if answer == "server":
            raise B.hub_failure("server")
        tensors = {"model.embed_tokens.weight": TensorInfo(dtype="F32", shape=[64, 48], data_offsets=(0, 12288))}
        return SafetensorsRepoMetadata(metadata=None, sharded=False, weight_map={},
                                       files_metadata={"model.safetensors": SafetensorsFileMetadata({}, tensors)})

    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", metadata)
    resolved = preflight.ResolvedSource("hub", "owner/name", "owner/name")
    with pytest.raises(error, match=phrase):
        preflight._check_hub_weights(LoadConfig(source="owner/name"), resolved, None, config)


@pytest.mark.parametrize("maker,phrase", [("huge_config", "config.json is 1 GiB; the limit is 16 MiB"),
                                          ("deep_config", "nests deeper than 64 levels")])
def test_the_architecture_page_reads_configs_within_the_limits(folders, maker, phrase):
    from explorer.model.configs import ConfigError, config_from_json, config_from_path

    with pytest.raises(ConfigError, match=phrase):
        config_from_path(folders[maker])
    with pytest.raises(ConfigError, match="the limit is 16 MiB"):
        config_from_json(b" " * (16 * 2**20 + 1), "upload.json")


CAPTURE_CASES = [  # issue 21 item 7: the API's capture() raises typed errors, each its own
    ("token id past the vocabulary", lambda v: torch.tensor([1, 2, v + 5]), E.TokenOutOfVocabulary, "outside"),
    ("negative token id", lambda v: torch.tensor([1, -3]), E.TokenOutOfVocabulary, "token id -3"),
    ("chat message without content", lambda v: [{"role": "user"}], E.BadMessages, "no text content"),
    ("chat message with None content", lambda v: [{"role": "user", "content": None}], E.BadMessages, "no text content"),
    ("chat message with unknown role", lambda v: [{"role": "hacker", "content": "x"}], E.BadMessages, "role"),
    ("lone surrogate", lambda v: "caf\udce9", E.BadText, "lone surrogate"),
    ("lone surrogate in a message", lambda v: [{"role": "user", "content": "\ud800"}], E.BadText, r"U\+D800"),
]


@pytest.mark.parametrize("case,prompt,kind,phrase", CAPTURE_CASES, ids=[c[0] for c in CAPTURE_CASES])
def test_capture_on_a_bad_prompt_is_a_typed_error_and_the_model_stays(resident, case, prompt, kind, phrase):
    from explorer.record.capture import capture

    reg, reference = resident
    loaded = reg.current
    vocab = loaded.model.get_input_embeddings().num_embeddings
    with pytest.raises(kind, match=phrase) as info:
        capture(loaded.model, loaded.tokenizer, prompt(vocab))
    assert_clean(user_message(info.value))
    assert_resident(reg, reference)


@pytest.mark.parametrize("maker,kind,phrase", [
    ("truncated_weights", E.BadWeights, "truncated"),
    ("garbage_header", E.BadWeights, "not valid JSON"),
    ("mismatched_weights", E.BadWeights, "do not fit its config"),
], ids=["truncated", "garbage header", "shapes"])
def test_cached_hub_weights_get_the_header_checks_too(folders, monkeypatch, maker, kind, phrase):
    """Issue 19 item 8: a damaged file in the hub cache is found in preflight, not after the swap."""
    from transformers import AutoConfig

    cached = folders[maker] / "model.safetensors"
    monkeypatch.setattr(preflight, "huggingface_hub_cached", lambda repo_id, cfg: str(cached))
    monkeypatch.setattr(preflight, "_check_hub_weights", lambda *a: pytest.fail("the hub was asked"))
    config = AutoConfig.from_pretrained(str(folders[maker]))
    pre = preflight.Preflight(preflight.ResolvedSource("hub", "owner/name", "owner/name"), "owner/name", config,
                              "fp32", "fp32", None, [])
    with pytest.raises(kind, match=phrase):
        preflight.check_weights(LoadConfig(source="owner/name"), pre)


def test_cached_hub_weights_that_are_whole_pass_without_asking_the_hub(folders, monkeypatch):
    from transformers import AutoConfig

    cached = folders["good"] / "model.safetensors"
    monkeypatch.setattr(preflight, "huggingface_hub_cached", lambda repo_id, cfg: str(cached))
    monkeypatch.setattr(preflight, "_check_hub_weights", lambda *a: pytest.fail("the hub was asked"))
    monkeypatch.setattr(preflight, "load_tokenizer", lambda *a: "tokenizer")
    config = AutoConfig.from_pretrained(str(folders["good"]))
    pre = preflight.Preflight(preflight.ResolvedSource("hub", "owner/name", "owner/name"), "owner/name", config,
                              "fp32", "fp32", None, [])
    preflight.check_weights(LoadConfig(source="owner/name"), pre)
    assert pre.tokenizer == "tokenizer"
