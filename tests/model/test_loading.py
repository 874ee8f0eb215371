"""The loader on tiny random models of three families, in every precision the CPU runs."""
from __future__ import annotations

import gc
import json
import shutil
import weakref

import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel

from explorer.model.embedded import embedded_gguf_path
from explorer.model.generation import GenerateOptions, conversation, generate
from explorer.model.loading import LoadConfig, LoadError, ModelRegistry, load_model
from explorer.presets import PRESETS
from tests.tiny_models import save_tiny_folder

CPU_PRECISIONS = ("nf4", "fp4", "int8", "bf16", "fp16", "fp32")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory, embedded_tokenizer):
    root = tmp_path_factory.mktemp("tiny")
    return {f: save_tiny_folder(f, root / f, embedded_tokenizer) for f in ("llama", "phi3", "gemma2")}


def _bnb_kinds(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__module__.startswith("bitsandbytes")}


@pytest.mark.parametrize("family", ["llama", "phi3", "gemma2"])
@pytest.mark.parametrize("precision", CPU_PRECISIONS)
def test_tiny_model_loads_and_generates_in_every_cpu_precision(tiny_folders, family, precision):
    loaded = load_model(LoadConfig(source=str(tiny_folders[family]), precision=precision))
    assert loaded.precision == precision and not loaded.notices
    kinds = _bnb_kinds(loaded.model)
    if precision in {"nf4", "fp4"}:
        assert kinds == {"Linear4bit"}
        weight = next(m.weight for m in loaded.model.modules() if type(m).__name__ == "Linear4bit")
        assert weight.quant_state.quant_type == precision
    elif precision == "int8":
        assert kinds == {"Linear8bitLt"}
    else:
        assert not kinds
        assert loaded.model.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    result = generate(loaded, conversation("Hello"), GenerateOptions(max_new_tokens=4))
    assert 1 <= result.new_tokens <= 4
    assert set(loaded.device_map.values()) == {"cpu"}


def test_footprint_shrinks_with_precision(tiny_folders):
    # bf16 compute: the parts bitsandbytes leaves unquantized (embeddings, norms) follow the compute
    # dtype, and "auto" picks fp32 on a CPU without native bf16
    sizes = {p: load_model(LoadConfig(source=str(tiny_folders["llama"]), precision=p,
                                      compute_dtype="bf16")).footprint_bytes
             for p in ("nf4", "int8", "bf16", "fp32")}
    assert sizes["nf4"] < sizes["int8"] < sizes["bf16"] < sizes["fp32"]
    assert sizes["fp32"] == pytest.approx(2 * sizes["bf16"], rel=0.01)


def test_double_quant_and_compute_dtype_are_applied(tiny_folders):
    loaded = load_model(LoadConfig(source=str(tiny_folders["llama"]), precision="nf4", double_quant=False,
                                   compute_dtype="fp32"))
    layer = next(m for m in loaded.model.modules() if type(m).__name__ == "Linear4bit")
    assert layer.compute_dtype == torch.float32
    assert layer.weight.quant_state.nested is False


def test_unload_frees_the_model_and_a_second_load_replaces_the_first(tiny_folders):
    registry = ModelRegistry()
    first = registry.load(LoadConfig(source=str(tiny_folders["llama"]), precision="bf16"))
    ref = weakref.ref(first.model)
    del first
    second = registry.load(LoadConfig(source=str(tiny_folders["phi3"]), precision="bf16"))
    gc.collect()
    assert ref() is None, "the first model must be freed when the second replaces it"
    assert registry.current is second
    ref2 = weakref.ref(second.model)
    del second
    registry.unload()
    gc.collect()
    assert ref2() is None and registry.current is None


def test_bad_source_leaves_the_resident_model_usable(tiny_folders, tmp_path):
    registry = ModelRegistry()
    resident = registry.load(LoadConfig(source=str(tiny_folders["llama"]), precision="bf16"))
    with pytest.raises(LoadError, match="No such file"):
        registry.load(LoadConfig(source=str(tmp_path / "missing")))
    assert registry.current is resident
    assert generate(resident, conversation("Hi"), GenerateOptions(max_new_tokens=2)).new_tokens >= 1


def test_missing_path_is_a_clear_message(tmp_path):
    with pytest.raises(LoadError, match="No such file or folder"):
        load_model(LoadConfig(source=str(tmp_path / "nothing-here")))


def test_truncated_gguf_is_reported_as_corrupt(tmp_path):
    broken = tmp_path / "broken.gguf"
    with open(embedded_gguf_path(), "rb") as src:
        broken.write_bytes(src.read(2_000_000))
    with pytest.raises(LoadError, match="corrupt or truncated"):
        load_model(LoadConfig(source=str(broken), cache_dir=str(tmp_path / "cache")))


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path, embedded_tokenizer):
    folder = save_tiny_folder("llama", tmp_path / "pickled", embedded_tokenizer, safe_serialization=False)
    assert not list(folder.glob("*.safetensors"))
    with pytest.raises(LoadError, match="pickle"):
        load_model(LoadConfig(source=str(folder), precision="fp32"))
    loaded = load_model(LoadConfig(source=str(folder), precision="fp32", allow_pickle=True))
    assert loaded.precision == "fp32"


def test_remote_code_model_is_refused_by_default(tiny_folders, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_folders["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError, match="trust_remote_code"):
        load_model(LoadConfig(source=str(folder)))


def test_non_causal_architecture_is_refused(tmp_path, embedded_tokenizer):
    folder = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64)).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    with pytest.raises(LoadError, match="not a causal language model"):
        load_model(LoadConfig(source=str(folder)))


def test_gated_preset_without_token_asks_for_one(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    gated = next(k for k, p in PRESETS.items() if p.gated)
    with pytest.raises(LoadError, match="HF_TOKEN"):
        load_model(LoadConfig(source=gated))


def test_unreachable_hub_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match="Could not reach the Hugging Face hub"):
        load_model(LoadConfig(source="nobody/no-such-model-anywhere"))


def test_token_never_appears_in_repr_or_messages(monkeypatch):
    secret = "hf_SECRET_token_value_123"
    cfg = LoadConfig(source="nobody/private-model", token=secret)
    assert secret not in repr(cfg)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError) as info:
        load_model(cfg)
    assert secret not in str(info.value)


def test_unknown_precision_is_rejected():
    with pytest.raises(LoadError, match="Unknown precision"):
        load_model(LoadConfig(precision="int3"))  # type: ignore[arg-type]


def test_a_restore_that_fails_too_says_no_model_is_loaded(tiny_folders, monkeypatch):
    from explorer.model import loading
    from explorer.model.errors import NoModelLoaded

    registry = ModelRegistry()
    resident = registry.load(LoadConfig(source=str(tiny_folders["llama"]), precision="bf16"))
    calls = []

    def broken(location, *args, **kwargs):  # the swap's load and the restore's load both fail
        calls.append(location)
        raise OSError(f"injected fault #{len(calls)}")

    monkeypatch.setattr(loading, "_from_pretrained", broken)
    with pytest.raises(NoModelLoaded, match="no model is loaded now") as info:
        registry.load(LoadConfig(source=str(tiny_folders["phi3"]), precision="bf16"))
    assert len(calls) == 2                                     # the load, then the restore, were tried
    assert "injected fault #2" in str(info.value)              # the restore's own reason is told
    assert registry.current is None and resident.retired
    assert isinstance(info.value, LoadError)                   # a failed load, caught where loads are caught


def test_a_restore_that_works_raises_the_load_error_not_no_model(tiny_folders, monkeypatch):
    from explorer.model import loading
    from explorer.model.errors import NoModelLoaded

    registry = ModelRegistry()
    registry.load(LoadConfig(source=str(tiny_folders["llama"]), precision="bf16"))
    real = loading._from_pretrained
    state = {"armed": True}

    def fail_once(*args, **kwargs):
        if state.pop("armed", False):
            raise OSError("injected fault")
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "_from_pretrained", fail_once)
    with pytest.raises(LoadError) as info:
        registry.load(LoadConfig(source=str(tiny_folders["phi3"]), precision="bf16"))
    assert not isinstance(info.value, NoModelLoaded)
    assert registry.current is not None and registry.current.name == "llama"
