"""Benchmark: the 8B module tree built from config, and the architecture figures' payload sizes.

Run: .venv/bin/python bench/bench_architecture.py
Writes bench/results/architecture.json and architecture.md. Targets (issue 4): tree < 1 s,
each figure < 2 MB of JSON.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from explorer.analyse.architecture import describe_config, model_from_config
from explorer.analyse.data_flow import data_flow
from explorer.analyse.memory_estimate import GIB, estimate_all
from explorer.model.configs import preset_config
from explorer.presets import PRESETS
from explorer.views.figures.architecture import (
    breakdown_figure,
    dataflow_figure,
    hierarchy_figure,
    memory_figure,
)

RESULTS = ROOT / "bench" / "results"
REPEATS = 5


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_build(key: str) -> dict:
    config = preset_config(key)
    start = time.perf_counter()
    view = describe_config(config, key)
    cold = time.perf_counter() - start
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        view = describe_config(config, key)
        runs.append(time.perf_counter() - start)
    return {"model": PRESETS[key].label, "modules": view.num_modules, "params": view.total_params,
            "first_build_s": round(cold, 3), "median_build_s": round(statistics.median(runs), 3),
            "best_build_s": round(min(runs), 3), "view": view}


def payloads(view) -> dict[str, int]:
    est = estimate_all(model_from_config(preset_config("llama-3.1-8b-instruct")))
    figs = {
        "icicle": hierarchy_figure(view.graph, "icicle"),
        "treemap": hierarchy_figure(view.graph, "treemap"),
        "dataflow": dataflow_figure(data_flow(view.anatomy, 0)),
        "breakdown": breakdown_figure(view.breakdown),
        "memory": memory_figure(est, extra_gib=1.5),
    }
    return {name: len(fig.to_json()) for name, fig in figs.items()}


def main() -> None:
    import transformers

    builds = [time_build(k) for k in PRESETS]
    llama = builds[0]
    sizes = payloads(llama.pop("view"))
    for b in builds[1:]:
        b.pop("view")
    est = {e.precision: e for e in estimate_all(model_from_config(preset_config("llama-3.1-8b-instruct")))}
    result = {
        "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cores": __import__("os").cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "tree_build_from_config": builds,
        "figure_payload_bytes_llama_3_1_8b": sizes,
        "llama_3_1_8b_nf4_dq_estimate": {
            "footprint_gb": round(est["nf4-dq"].footprint_bytes / 1e9, 4),
            "allocated_gib": round(est["nf4-dq"].allocated_bytes / GIB, 4),
            "h100_measured": {"get_memory_footprint_gb": 5.59, "allocated_gib": 5.32},
        },
        "targets": {"tree_build_s": 1.0, "figure_payload_bytes": 2 * 1024**2},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "architecture.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        "# Architecture view benchmark",
        "",
        f"Machine: {m['platform']}, {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}.",
        "",
        "## Module tree from config (meta device, no weights), target < 1 s",
        "",
        "| model | modules | parameters | first build (s) | median of 5 (s) | best (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in builds:
        lines.append(f"| {b['model']} | {b['modules']} | {b['params']:,} | {b['first_build_s']} | "
                     f"{b['median_build_s']} | {b['best_build_s']} |")
    lines += ["", "First build includes importing the model class; the page caches builds on the config JSON.", "",
              "## Figure payload, Llama 3.1 8B (len of fig.to_json()), target < 2 MB", "",
              "| figure | bytes |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in sizes.items()]
    e = result["llama_3_1_8b_nf4_dq_estimate"]
    lines += ["", "## Llama 3.1 8B, NF4 + double quant", "",
              f"Estimate: get_memory_footprint {e['footprint_gb']} GB, allocated {e['allocated_gib']} GiB "
              "(measured on an H100: 5.59 GB and 5.32 GiB).", ""]
    (RESULTS / "architecture.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
