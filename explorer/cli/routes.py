"""`routes`: information-flow routes and direct logit attribution for one prompt, as JSON.

Either runs the prompt (capture with the "components" part) or reads a capture file that has them.
Every argument is checked before the model loads: the prompt is tokenized first (tokenizer only),
so a position outside it is an error instead of wrapping round to another token.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.capture_bundle import save_with_results
from explorer.analyse.derived import Derived
from explorer.analyse.routes import DEFAULT_THRESHOLD, attention_rows_from_store, build_routes
from explorer.cli.args import check_position, fraction_below_one, load_config, positive_int, read_text_file, text_arg
from explorer.model.errors import BadArgument, GenerationError
from explorer.model.loading import load_model
from explorer.model.precisions import LOAD_PRECISIONS
from explorer.model.preflight import preflight
from explorer.model.safe_write import check_target, write_text
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, PromptTooLongError, capture
from explorer.record.capture_file import open_capture
from explorer.record.capture_plan import tokenize
from explorer.record.token_text import token_text

HELP = "which tokens, heads and MLPs carried a prediction: routes graph and logit attribution as JSON"


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file")
    src.add_argument("--capture", type=Path, help="a capture file recorded with the 'components' part")
    p.add_argument("--model", default="embedded", help="preset key, hub id, local folder or .gguf path")
    p.add_argument("--precision", default="nf4", choices=LOAD_PRECISIONS)
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    p.add_argument("--position", type=int, default=-1, help="token position to explain (default: the last)")
    p.add_argument("--target", type=int, help="token id whose logit to attribute (default: the top prediction)")
    p.add_argument("--threshold", type=fraction_below_one, default=DEFAULT_THRESHOLD,
                   help=f"keep edges whose importance exceeds this share, in [0, 1) (default {DEFAULT_THRESHOLD})")
    p.add_argument("--top", type=positive_int, default=20, help="attributions to list")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--save-capture", type=Path, help="also write the capture (with components) here")


def _from_file(args: argparse.Namespace):
    cap = open_capture(args.capture)
    if cap.components is None or cap.attention is None:
        raise BadArgument(f"{args.capture} has no components or attention; record it with "
                          "`capture --parts ...,components`.")
    check_position(args.position, cap.num_tokens)
    return cap, None


def _from_prompt(args: argparse.Namespace):
    prompt = text_arg(args.prompt) if args.prompt is not None else read_text_file(args.prompt_file)
    if not prompt.strip():
        raise BadArgument("the prompt is empty.")
    cfg = load_config(args.model, args.precision)   # the operator switches, as in every subcommand
    pre = preflight(cfg)                            # config, weights' headers and the tokenizer; no model yet
    options = CaptureOptions(parts=DEFAULT_PARTS | {"components"})
    source = [{"role": "user", "content": prompt}] if args.chat else prompt
    try:
        ids = tokenize(pre.tokenizer, source, options)
    except ValueError as exc:
        raise BadArgument(f"{exc}.") from None
    check_position(args.position, int(ids.numel()))
    vocab = len(pre.tokenizer)
    if args.target is not None and not 0 <= args.target < vocab:
        raise BadArgument(f"--target {args.target} is not a token id of {pre.resolved.name} (0–{vocab - 1}).")
    loaded = load_model(cfg, checked=pre)
    options.model_name = loaded.name
    try:
        cap = capture(loaded.model, loaded.tokenizer, ids, options)
    except (PromptTooLongError, ValueError) as exc:
        raise GenerationError(f"{exc}.") from None
    if cap.components is None:
        raise GenerationError("components could not be recorded: " + "; ".join(cap.notes))
    return cap, loaded.tokenizer


def cmd_routes(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = check_target(args.out)
    if args.save_capture:
        check_target(args.save_capture)
    cap, tokenizer = _from_file(args) if args.capture is not None else _from_prompt(args)
    t1 = time.perf_counter()
    try:
        attribution = direct_logit_attribution(cap.components, args.position, args.target)
        graph = build_routes(cap.components, attention_rows_from_store(cap.attention), args.position,
                             args.threshold, cap.token_texts)
    except KeyError as exc:
        raise BadArgument(str(exc.args[0]) + ".") from None
    t2 = time.perf_counter()
    results = Derived()
    if tokenizer is not None:
        results.learn_texts([attribution.target], lambda i: token_text(tokenizer, i))
    result = {"model": cap.model_name, "tokens": cap.token_texts,
              "target_text": results.token_text(cap, attribution.target),
              "attribution": attribution.to_dict(args.top), "routes": graph.to_dict(), "notes": cap.notes}
    write_text(out, json.dumps(result, indent=1, ensure_ascii=False))
    if args.save_capture:
        save_with_results(cap, str(args.save_capture), results)
    print(f"explained {result['target_text']!r} at position {graph.position} of {cap.num_tokens} tokens: "
          f"{len(graph.nodes)} nodes, {len(graph.edges)} edges over {args.threshold}; "
          f"capture {t1 - t0:.1f} s, analysis {t2 - t1:.2f} s; wrote {out}")
    for row in attribution.ranked(5):
        where = f"layer {row['layer']}" + (f" head {row['head']}" if row["head"] is not None else "")
        print(f"  {row['part']:>14} {where:<18} {row['value']:+.3f}")
    return 0
