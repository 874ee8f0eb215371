"""Capture on a model spread over every visible GPU by device_map, checked against one device.

A random Llama (8 layers) is saved with a real tokenizer, loaded once with device_map="balanced"
across the GPUs and once on a single GPU, in fp32 and in NF4; both are captured and compared.
Writes bench/results/multi_gpu_cuda.json and .md.

    python bench/bench_multi_gpu.py TOKENIZER_DIR
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.analyse.attention import attention_map
from explorer.model.loading import LoadConfig, load_model, unload
from explorer.record.capture import capture

PROMPT = "Attention heads on two different GPUs still have to agree with one another. " * 8


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    report: dict = {"gpus": gpus, "torch": torch.__version__, "runs": {}}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=4096)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for precision in ("fp32", "nf4"):
            caps, maps = {}, {}
            for placement in ("balanced", "single"):
                cfg = LoadConfig(source=tmp, precision=precision,
                                 device_map="balanced" if placement == "balanced" else "cuda:0")
                loaded = load_model(cfg)
                start = time.perf_counter()
                caps[placement] = capture(loaded.model, loaded.tokenizer, PROMPT)
                seconds = time.perf_counter() - start
                maps[placement] = sorted(set(loaded.device_map.values()))
                report["runs"][f"{precision}-{placement}"] = {
                    "devices": maps[placement], "capture_seconds": round(seconds, 3),
                    "residual_device": str(caps[placement].residual.device),
                    "tokens": caps[placement].num_tokens}
                unload(loaded)
            a, b = caps["balanced"], caps["single"]
            report["runs"][f"{precision}-agreement"] = {
                "residual_max_abs_diff": float((a.residual.float() - b.residual.float()).abs().max()),
                "attention_max_abs_diff": max(float((attention_map(a, layer, h).float()
                                                     - attention_map(b, layer, h).float()).abs().max())
                                              for layer in range(a.num_layers) for h in range(a.num_heads)),
                "last_logits_max_abs_diff": float((a.last_logits - b.last_logits).abs().max()),
            }
            print(precision, report["runs"][f"{precision}-agreement"], maps, flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "multi_gpu_cuda.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Capture across {len(gpus)} GPUs ({', '.join(sorted(set(gpus)))})", "",
             "Random Llama (8 layers, hidden 1024, 16 heads, 4 KV heads), 129-token prompt; "
             "`python bench/bench_multi_gpu.py TOKENIZER_DIR` on the device machine.", "",
             "| run | devices | capture s | results on |", "|---|---|---|---|"]
    for name, r in report["runs"].items():
        if "devices" in r:
            lines.append(f"| {name} | {', '.join(r['devices'])} | {r['capture_seconds']} | {r['residual_device']} |")
    lines += ["", "| precision | residual max abs diff | attention max abs diff | last logits max abs diff |",
              "|---|---|---|---|"]
    for precision in ("fp32", "nf4"):
        r = report["runs"][f"{precision}-agreement"]
        lines.append(f"| {precision} (balanced vs one GPU) | {r['residual_max_abs_diff']:.2e} | "
                     f"{r['attention_max_abs_diff']:.2e} | {r['last_logits_max_abs_diff']:.2e} |")
    (out / "multi_gpu_cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
