"""`capture` and `show`: run a prompt through a model and save its internals; summarise a saved file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from explorer.analyse.attention import head_summaries
from explorer.analyse.lens import LensHead, logit_lens
from explorer.model.loading import LoadConfig, LoadError, load_model
from explorer.record.capture import PARTS, CaptureOptions, PromptTooLongError, capture
from explorer.record.capture_file import describe_capture, open_capture, save_capture

CAPTURE_HELP = "run a prompt through a model and save every layer's internals"
SHOW_HELP = "summarise a saved capture file (no model needed)"


def _parse_layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, part)
            layers.extend(range(int(a), int(b) + 1))
        elif part:
            layers.append(int(part))
    return layers


def configure_capture(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded",
                   help="preset key, hub id, local folder or .gguf path (default: embedded)")
    p.add_argument("--precision", default="nf4", choices=["nf4", "fp4", "int8", "bf16", "fp16", "fp32"])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user message in the model's chat template")
    p.add_argument("--out", type=Path, required=True, help="capture file to write (.capture)")
    p.add_argument("--layers", help="keep residual/attention for these layers only, e.g. '0,4,8-11'")
    p.add_argument("--parts", help=f"comma-separated subset of {','.join(sorted(PARTS))}")
    p.add_argument("--budget-gib", type=float, help="memory budget for the capture, in GiB")
    p.add_argument("--summaries", action="store_true", help="compute per-head attention summaries into the file")
    p.add_argument("--lens", type=int, default=0, metavar="K", help="compute the logit lens top-K into the file")
    p.add_argument("--no-attention", action="store_true",
                   help="leave queries/keys out of the file (smaller; summaries kept if computed)")


def cmd_capture(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else args.prompt_file.read_text(encoding="utf-8")
    parts = PARTS if not args.parts else frozenset(p.strip() for p in args.parts.split(",") if p.strip())
    options = CaptureOptions(parts=parts, layers=_parse_layers(args.layers),
                             memory_budget_bytes=int(args.budget_gib * 2**30) if args.budget_gib else None)
    t0 = time.perf_counter()
    try:
        loaded = load_model(LoadConfig(source=args.model, precision=args.precision))
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options.model_name = loaded.name
    options.precision = loaded.precision
    t1 = time.perf_counter()
    source = [{"role": "user", "content": prompt}] if args.chat else prompt
    try:
        cap = capture(loaded.model, loaded.tokenizer, source, options)
    except (PromptTooLongError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t2 = time.perf_counter()
    if args.summaries and cap.attention is not None:
        head_summaries(cap)
    if args.lens and cap.residual is not None:
        logit_lens(cap, LensHead.from_model(loaded.model), args.lens,
                   decode=lambda i: loaded.tokenizer.decode([i]))
    save_capture(cap, args.out, include_attention=not args.no_attention)
    t3 = time.perf_counter()
    print(f"loaded {loaded.name} ({loaded.precision}) in {t1 - t0:.1f} s; captured {cap.num_tokens} tokens "
          f"in {t2 - t1:.2f} s; wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) in {t3 - t2:.2f} s")
    for note in cap.notes:
        print(f"note: {note}")
    return 0


def configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a file written by `capture`")
    p.add_argument("--top", type=int, default=5, help="next-token candidates to list")


def cmd_show(args: argparse.Namespace) -> int:
    try:
        cap = open_capture(args.file)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe_capture(cap, top=args.top))
    return 0
