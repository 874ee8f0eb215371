"""Shipped reference configs and the other config sources, with their error messages."""
from __future__ import annotations

import json

import pytest

from explorer.analyse.architecture import describe_config
from explorer.model.configs import ConfigError, config_from_dict, config_from_hub, config_from_json, config_from_path, embedded_config, preset_config
from explorer.presets import EMBEDDED, PRESETS, preset_dict


@pytest.mark.parametrize("key,total,layers", [
    ("llama-3.1-8b-instruct", 8_030_261_248, 32),  # 8.03 B
    ("phi-3-mini-4k-instruct", 3_821_079_552, 32),  # 3.82 B
    ("gemma-2-2b-it", 2_614_341_888, 26),  # 2.61 B
])
def test_presets_build_with_their_published_totals(key, total, layers):
    view = describe_config(preset_config(key), key)
    assert view.total_params == total == PRESETS[key].published_params
    assert view.anatomy.num_layers == layers and not view.anatomy.missing


def test_every_preset_ships_a_config_and_only_the_embedded_one_loads_offline():
    for key, preset in PRESETS.items():
        assert preset_dict(key)["model_type"]
        assert (preset.hub_id is None) == (key == EMBEDDED)
    with pytest.raises(KeyError, match="known: embedded"):
        preset_dict("nope")
    with pytest.raises(ConfigError, match="No preset called"):
        preset_config("nope")


def test_gemma_ties_its_head_and_llama_does_not():
    gemma = describe_config(preset_config("gemma-2-2b-it"), "g")
    assert gemma.tied == {"model.embed_tokens.weight": ("lm_head.weight",)}
    assert describe_config(preset_config("llama-3.1-8b-instruct"), "l").tied == {}


def test_shipped_smollm2_config_matches_the_embedded_gguf():
    shipped = preset_config(EMBEDDED)
    real = embedded_config()
    for attr in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vocab_size", "tie_word_embeddings"):
        assert getattr(shipped, attr) == getattr(real, attr), attr
    assert describe_config(shipped, "s").total_params == PRESETS[EMBEDDED].published_params


def test_a_config_file_or_its_folder_opens(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(preset_dict("phi-3-mini-4k-instruct")))
    assert config_from_path(tmp_path).model_type == "phi3"
    assert config_from_path(tmp_path / "config.json").hidden_size == 3072


def test_remote_code_and_quantization_keys_are_ignored():
    data = dict(preset_dict("phi-3-mini-4k-instruct"), auto_map={"AutoModelForCausalLM": "x.Y"},
                quantization_config={"load_in_4bit": True})
    cfg = config_from_dict(data)
    assert not hasattr(cfg, "auto_map") or not cfg.auto_map
    assert describe_config(cfg, "p").total_params == 3_821_079_552


@pytest.mark.parametrize("text,message", [
    ('{"model_type": "llama", "hidden_size": ', "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"hidden_size": 64}', "no 'model_type'"),
    ('{"model_type": "not-a-model"}', "unknown to this transformers"),
    ('{"model_type": "vit"}', "not a causal language model"),
    ('{"model_type": "t5"}', "not a causal language model"),
    ('{"model_type": "llama", "hidden_size": "wide"}', "invalid values"),
    ('{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 7}', "invalid values"),
])
def test_bad_configs_get_a_clear_message(text, message):
    with pytest.raises(ConfigError, match=message):
        config_from_json(text)


def test_a_missing_path_says_so(tmp_path):
    with pytest.raises(ConfigError, match="No config.json"):
        config_from_path(tmp_path / "nothing")


def test_hub_ids_offline_get_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="offline"):
        config_from_hub("someone/not-cached-anywhere")
    with pytest.raises(ConfigError, match="not a valid hub id"):
        config_from_hub("no slash here")
