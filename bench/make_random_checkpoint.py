"""Build the Llama-3.1-8B architecture with random weights and save it, fast, for GPU benchmarks.

Why random weights: the benchmark measures cost, which depends on shapes, not on what the
weights say, and no hub access is needed. Built on the meta device, materialised directly on the
target device and filled with normal(0, 0.02) in bf16 (norm weights 1), then saved with
save_pretrained. Benchmarks use random token ids, so no tokenizer is written.

    python bench/make_random_checkpoint.py /tmp/llama31-8b-random            # on a GPU machine
    python bench/make_random_checkpoint.py /tmp/small --layers 2 --hidden 256 --device cpu   # smoke test
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama31_8b_config(layers: int = 32, hidden: int = 4096, intermediate: int = 14336,
                      heads: int = 32, kv_heads: int = 8, vocab: int = 128256) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=128000, eos_token_id=128001, hidden_act="silu",
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        dtype="bfloat16",
    )


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def build(folder: Path, config: LlamaConfig, device: str, seed: int = 0) -> float:
    """Returns the seconds it took; does nothing if the folder already holds a checkpoint."""
    if is_complete(folder):
        print(f"{folder} already holds a checkpoint; skipping")
        return 0.0
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for _name, param in model.named_parameters():
            if param.dim() == 1:          # RMSNorm scales
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    # Non-persistent buffers (rotary inv_freq) are not saved; the loader recomputes them.
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, max_shard_size="5GB")
    (folder / "RANDOM_WEIGHTS.json").write_text(json.dumps(
        {"note": "random normal(0, 0.02) weights in the Llama-3.1-8B architecture, for benchmarks only",
         "seed": seed, "params": sum(p.numel() for p in model.parameters())}, indent=1))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096, help="smaller values for smoke tests only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    small = args.hidden != 4096
    config = llama31_8b_config(layers=args.layers, hidden=args.hidden,
                               intermediate=args.hidden * 7 // 2 if small else 14336,
                               vocab=4096 if small else 128256)
    seconds = build(args.folder, config, args.device, args.seed)
    if seconds:
        print(f"wrote {args.folder} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
