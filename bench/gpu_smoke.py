"""GPU smoke check (not a test; CI has no GPU): the loader, generation and capture on CUDA.

Loads a tiny random Llama in NF4 and bf16 through explorer.model.loading with device_map="auto",
generates, captures, and checks the captured attention against eager output_attentions.

    python bench/gpu_smoke.py TOKENIZER_DIR
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analyse.attention import attention_map
from explorer.model.generation import GenerateOptions, conversation, generate
from explorer.model.loading import LoadConfig, load_model, unload
from explorer.record.capture import capture
from tests.tiny_models import save_tiny_folder


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    report: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_folder("llama", Path(tmp) / "tiny", tokenizer)
        for precision in ("nf4", "bf16", "fp32"):
            loaded = load_model(LoadConfig(source=str(folder), precision=precision))
            result = generate(loaded, conversation("Hello there"), GenerateOptions(max_new_tokens=8))
            cap = capture(loaded.model, loaded.tokenizer, "The quick brown fox jumps over the lazy dog")
            row = {"loaded_as": loaded.precision, "devices": sorted(set(loaded.device_map.values())),
                   "footprint": loaded.footprint_bytes, "new_tokens": result.new_tokens,
                   "capture_device": str(cap.residual.device) if cap.residual is not None else None}
            if precision == "fp32":
                ids = cap.token_ids[None].to("cuda")
                loaded.model.set_attn_implementation("eager")
                with torch.no_grad():
                    eager = loaded.model(ids, output_attentions=True).attentions
                loaded.model.set_attn_implementation("sdpa")
                row["max_abs_diff_vs_eager"] = max(
                    float((attention_map(cap, layer, head).float() - eager[layer][0, head].float().cpu()).abs().max())
                    for layer in range(len(eager)) for head in range(eager[layer].shape[1]))
            report[precision] = row
            print(precision, row, flush=True)
            unload(loaded)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
