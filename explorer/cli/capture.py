"""`capture` and `show`: run a prompt through a model and save its internals; summarise a saved file."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from explorer.analyse.attention import capture_head_summaries
from explorer.analyse.capture_bundle import describe_capture, open_with_results, save_with_results
from explorer.analyse.derived import Derived
from explorer.analyse.lens import LensHead, logit_lens
from explorer.cli.args import layer_list, load_config, non_negative_int, positive_float, positive_int, read_text_file, text_arg, writable_out
from explorer.model.errors import BadArgument, GenerationError
from explorer.model.loading import load_model
from explorer.model.precisions import LOAD_PRECISIONS
from explorer.model.units import fmt_bytes
from explorer.record.capture import DEFAULT_PARTS, PARTS, CaptureOptions, PromptTooLongError, capture
from explorer.record.token_text import token_text

CAPTURE_HELP = "run a prompt through a model and save every layer's internals"
SHOW_HELP = "summarise a saved capture file (no model needed)"


def _parse_layers(text: str | None) -> list[int] | None:
    return layer_list(text) if text else None


def configure_capture(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded",
                   help="preset key, hub id, local folder or .gguf path (default: embedded)")
    p.add_argument("--precision", default="nf4", choices=LOAD_PRECISIONS)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt as a user message in the model's chat template")
    p.add_argument("--out", type=Path, required=True, help="capture file to write (.capture)")
    p.add_argument("--layers", type=layer_list, help="keep residual/attention for these layers only, e.g. '0,4,8-11'")
    p.add_argument("--parts", help=f"comma-separated subset of {','.join(sorted(PARTS))}")
    p.add_argument("--budget-gib", type=positive_float, help="memory budget for the capture, in GiB")
    p.add_argument("--summaries", action="store_true", help="compute per-head attention summaries into the file")
    p.add_argument("--lens", type=non_negative_int, default=0, metavar="K", help="compute the logit lens top-K into the file")
    p.add_argument("--no-attention", action="store_true",
                   help="leave queries/keys out of the file (smaller; summaries kept if computed)")


def _parts(text: str | None) -> frozenset[str]:
    if not text:
        return DEFAULT_PARTS
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(parts - PARTS)
    if unknown or not parts:
        raise BadArgument(f"unknown --parts {', '.join(unknown) or '(none)'}; choose from {', '.join(sorted(PARTS))}.")
    return parts


def cmd_capture(args: argparse.Namespace) -> int:
    """Every argument is checked before the model loads; errors are raised for main() to print."""
    prompt = text_arg(args.prompt) if args.prompt is not None else read_text_file(args.prompt_file)
    if not prompt.strip():
        raise BadArgument("the prompt is empty.")
    options = CaptureOptions(parts=_parts(args.parts), layers=args.layers,
                             memory_budget_bytes=int(args.budget_gib * 2**30) if args.budget_gib else None)
    out = writable_out(args.out)
    t0 = time.perf_counter()
    loaded = load_model(load_config(args.model, args.precision))
    for notice in loaded.notices:
        print(f"note: {notice}", file=sys.stderr)
    options.model_name = loaded.name
    options.precision = loaded.precision
    t1 = time.perf_counter()
    source = [{"role": "user", "content": prompt}] if args.chat else prompt
    if args.layers and max(args.layers) >= loaded.model.config.num_hidden_layers:
        raise BadArgument(f"--layers goes up to {max(args.layers)}, but {loaded.name} has "
                          f"{loaded.model.config.num_hidden_layers} layers (0–{loaded.model.config.num_hidden_layers - 1}).")
    try:
        cap = capture(loaded.model, loaded.tokenizer, source, options)
    except (PromptTooLongError, ValueError) as exc:
        raise GenerationError(str(exc)) from None
    t2 = time.perf_counter()
    results = Derived()
    if args.summaries and cap.attention is not None:
        capture_head_summaries(cap, results)
    if args.lens and cap.residual is not None:
        logit_lens(cap, LensHead.from_model(loaded.model), args.lens,
                   decode=lambda i: token_text(loaded.tokenizer, i), derived=results)
    try:
        save_with_results(cap, str(out), results, include_attention=not args.no_attention)
    except OSError as exc:
        raise BadArgument(f"cannot write {out}: {exc.strerror}.") from None
    t3 = time.perf_counter()
    print(f"loaded {loaded.name} ({loaded.precision}) in {t1 - t0:.1f} s; captured {cap.num_tokens} tokens "
          f"in {t2 - t1:.2f} s; wrote {out} ({fmt_bytes(out.stat().st_size)}) in {t3 - t2:.2f} s")
    print(cap.attention_placement())
    for note in cap.notes:
        print(f"note: {note}")
    return 0


def configure_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="a file written by `capture`")
    p.add_argument("--top", type=positive_int, default=5, help="next-token candidates to list")


def cmd_show(args: argparse.Namespace) -> int:
    """A malformed file raises CaptureFileError, whose message main() prints as open_capture says it."""
    cap, results = open_with_results(args.file)
    print(describe_capture(cap, results, top=args.top))
    return 0
