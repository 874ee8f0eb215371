"""Benchmark: activation patching, batched (several patched copies of the corrupted prompt per forward).

    python bench/bench_patching.py                                     # CPU, embedded SmolLM2 NF4
    python bench/bench_patching.py --device cuda --checkpoint DIR      # Llama-3.1-8B arch NF4 (random weights)

CPU: residual patching of every (layer, position) on a 20-token prompt (IOI: "... John gave a
drink to" vs "... Mary gave a drink to"), goal ≤ 30 s on 2 cores. The machine may be shared with
other jobs: the load average at the start is recorded with the result.
CUDA: every head patched at every position (32 × 32 = 1,024 patches) on a 32-token prompt, goal
≤ 10 s on an H200; residual patching of every (layer, position) too. Each timed after one warm-up run.
Writes bench/results/patching_<device>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_capture import machine_info
from explorer.analyse.patching import batch_rows, patch_heads, patch_residual, prepare

CLEAN = "Late in the evening, when Mary and John went to the big store, John gave a drink to"
CORRUPT = "Late in the evening, when Mary and John went to the big store, Mary gave a drink to"


def _timed(fn, reps: int, device: str) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times, out


def run_cpu(args) -> dict:
    from explorer.model.loading import LoadConfig, load_model
    loaded = load_model(LoadConfig(source="embedded", precision=args.precision))
    tok, model = loaded.tokenizer, loaded.model
    clean, corrupt = torch.tensor(tok(CLEAN)["input_ids"]), torch.tensor(tok(CORRUPT)["input_ids"])
    assert clean.numel() == corrupt.numel() == 20, (clean.numel(), corrupt.numel())
    answer, foil = tok(" Mary", add_special_tokens=False)["input_ids"][0], tok(" John", add_special_tokens=False)["input_ids"][0]
    t0 = time.perf_counter()
    setup = prepare(model, clean, corrupt, answer, foil)
    prep = time.perf_counter() - t0
    rows = args.rows or batch_rows(model, 20)
    patch_residual(model, setup, rows=rows)                                       # warm-up
    times, res = _timed(lambda: patch_residual(model, setup, rows=rows), args.reps, "cpu")
    best = res.scores[:, -1].argmax().item()
    from explorer.analyse.patching import Patch
    ran = sum(not setup.unchanged(Patch("resid", l, p)) for l in range(res.scores.shape[0]) for p in range(20))
    return {"model": f"{loaded.name} ({loaded.precision})", "tokens": 20, "patches": int(res.scores.numel()),
            "patches_run": ran, "rows_per_forward": rows, "prepare_s": prep, "seconds": times, "median_s": statistics.median(times),
            "goal_s": 30, "clean_logit_diff": res.clean_diff, "corrupt_logit_diff": res.corrupt_diff,
            "score_last_layer_last_position": float(res.scores[-1, -1]),
            "layer_restoring_most_at_the_last_position": best}


def run_cuda(args) -> dict:
    from explorer.model.loading import LoadConfig, load_model
    if not args.checkpoint:
        raise SystemExit("--checkpoint DIR is required on cuda (make it with bench/make_random_checkpoint.py)")
    loaded = load_model(LoadConfig(source=args.checkpoint, precision="nf4"))
    model = loaded.model
    vocab = model.get_output_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(100, vocab, (32,), generator=g)
    corrupt = clean.clone()
    corrupt[10] = (clean[10] + 1) % vocab
    setup = prepare(model, clean, corrupt)
    rows = args.rows or batch_rows(model, 32)
    out = {"model": f"{args.checkpoint} (Llama-3.1-8B architecture, random weights, NF4)", "tokens": 32,
           "rows_per_forward": rows}
    for name, fn in (("heads", patch_heads), ("resid", patch_residual)):
        fn(model, setup, rows=rows)                                                 # warm-up
        torch.cuda.reset_peak_memory_stats()
        times, res = _timed(lambda: fn(model, setup, rows=rows), args.reps, "cuda")
        out[name] = {"patches": int(res.scores.numel()), "seconds": times, "median_s": statistics.median(times),
                     "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}
    out["heads"]["goal_s"] = 10
    return out


def write(device: str, result: dict) -> None:
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"patching_{device}.json").write_text(json.dumps(result, indent=1))
    m = result["machine"]
    lines = [f"# Activation patching ({device})", "",
             f"Command: `python bench/bench_patching.py --device {device}" + (" --checkpoint DIR`" if device == "cuda"
                                                                               else "`"),
             f"Machine: {m.get('gpu') or m['cpu']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}, "
             f"load average at start {m['load_average_at_start']} (the machine is shared with other jobs)",
             f"Model: {result['model']}; prompt {result['tokens']} tokens; {result['rows_per_forward']} patched "
             "copies per forward", ""]
    if device == "cpu":
        ran = (f" ({result['patches_run']} run; the others copy what the corrupted run holds, before the first "
               "differing token, and take its result exactly)" if "patches_run" in result else "")
        lines += [f"- Residual patching, every (layer, position): {result['patches']} patches{ran} in "
                  f"**{result['median_s']:.1f} s** (median of {len(result['seconds'])}; runs "
                  f"{', '.join(f'{s:.1f}' for s in result['seconds'])} s; goal ≤ {result['goal_s']} s)",
                  f"- Both prompts run once before: {result['prepare_s']:.2f} s",
                  f"- Logit difference “ Mary” − “ John”: clean {result['clean_logit_diff']:+.2f}, corrupted "
                  f"{result['corrupt_logit_diff']:+.2f}; last layer at the last position restores "
                  f"{result['score_last_layer_last_position']:.3f} (1 by construction)"]
    else:
        for name in ("heads", "resid"):
            r = result[name]
            lines.append(f"- {name}: {r['patches']} patches in **{r['median_s']:.2f} s** (runs "
                         f"{', '.join(f'{s:.2f}' for s in r['seconds'])} s), peak GPU {r['peak_gpu_gib']:.1f} GiB"
                         + (f"; goal ≤ {r['goal_s']} s" if "goal_s" in r else ""))
    (folder / f"patching_{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--checkpoint", help="cuda: folder written by bench/make_random_checkpoint.py")
    p.add_argument("--precision", default="nf4", help="cpu: the embedded model's precision")
    p.add_argument("--rows", type=int, help="patched copies per forward (default: by memory)")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    info = machine_info(args.device)
    result = run_cpu(args) if args.device == "cpu" else run_cuda(args)
    result["machine"] = info
    write(args.device, result)


if __name__ == "__main__":
    main()
