"""`python -m explorer compare`: the comparison from the command line, saved as JSON and a report.

Listed in the command table of explorer/cli/main.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explorer.cli.args import positive_int, read_text_file, text_arg
from explorer.compare.report import html_report, markdown_report, save_results
from explorer.compare.run import CompareConfig, LoadAccess, run_comparison
from explorer.model.errors import BadArgument, GenerationError, env_token
from explorer.model.safe_write import check_target, write_text
from explorer.model.switches import operator_switches
from explorer.views.units import fmt_bytes

HELP = "compare models and precisions on the same prompts: speed, memory, output and quality drift"


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def configure_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="embedded",
                   help="comma-separated preset keys, hub ids, folders or .gguf paths (default: embedded)")
    p.add_argument("--precisions", default="nf4,bf16",
                   help="comma-separated subset of nf4,fp4,int8,bf16,fp16,fp32 (default: nf4,bf16)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    p.add_argument("--prompt-file", type=Path, help="a file with one prompt per line")
    p.add_argument("--system", help="system prompt sent with every prompt")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--fixed-length", action="store_true",
                   help="generate exactly --max-new-tokens (EOS cannot stop early): equal work per run")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed generations per prompt; the median is kept")
    p.add_argument("--no-drift", action="store_true", help="skip quality drift (faster)")
    p.add_argument("--no-attention", action="store_true", help="skip the per-head attention difference")
    p.add_argument("--out", type=Path, required=True, help="results file to write (.json)")
    p.add_argument("--report", type=Path, help="also write a report: .md for Markdown, .html for HTML")


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = [text_arg(p, "a --prompt") for p in args.prompt]
    if args.prompt_file is not None:
        text = read_text_file(args.prompt_file)
        prompts += [line for line in text.splitlines() if line.strip()]
    return prompts


def cmd_compare(args: argparse.Namespace) -> int:
    """Arguments and both outputs are checked before any model loads; errors go to stderr."""
    prompts = _prompts(args)
    models = _split(text_arg(args.models, "--models"))
    system = text_arg(args.system, "--system") if args.system is not None else None
    config = CompareConfig(models=models, precisions=_split(args.precisions), prompts=prompts,
                           max_new_tokens=args.max_new_tokens, fixed_length=args.fixed_length, repeats=args.repeats,
                           system_prompt=system, drift=not args.no_drift,
                           attention_drift=not args.no_attention)
    try:
        config.validate()
    except ValueError as exc:
        raise BadArgument(f"{str(exc).rstrip('.')}.") from None
    check_target(args.out)
    if args.report is not None:
        check_target(args.report)
    switches = operator_switches()  # the same switches as the app and every other subcommand
    token = env_token()
    access = LoadAccess(allow_pickle=switches.allow_pickle, trust_remote_code=switches.trust_remote_code,
                        token=token.reveal() if token else None)
    result = run_comparison(config, progress=lambda m: print(m, file=sys.stderr, flush=True), access=access)
    if not any(r.loaded_precision for r in result.runs):
        errors = "; ".join(f"{r.label}: {r.error}" for r in result.runs)
        raise GenerationError(f"every model failed, nothing written: {errors}")
    save_results(result, args.out)
    if args.report is not None:
        text = html_report(result) if args.report.suffix.lower() in {".html", ".htm"} else markdown_report(result)
        write_text(args.report, text)
    for run in result.runs:
        if run.loaded_precision is None:
            print(f"{run.label}: error: {run.error}", file=sys.stderr)
            continue
        drift = (" · reference" if run.is_reference else
                 f" · KL {run.drift.kl_mean:.2e}, top-1 {run.drift.top1_agreement:.1%}" if run.drift else "")
        tps = f"{run.tokens_per_second:.1f} tok/s" if run.tokens_per_second else "— tok/s"
        print(f"{run.label}: footprint {fmt_bytes(run.footprint_bytes)}, peak {fmt_bytes(run.peak_bytes)}, "
              f"load {run.load_seconds:.1f} s, {tps}{drift}" + (f"  ({run.error})" if run.error else ""))
    print(f"wrote {args.out}" + (f" and {args.report}" if args.report else ""))
    return 0
