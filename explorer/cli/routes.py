"""`routes`: information-flow routes and direct logit attribution for one prompt, as JSON.

Either runs the prompt (capture with the "components" part) or reads a capture file that has them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from explorer.analyse.attribution import direct_logit_attribution
from explorer.analyse.capture_bundle import save_with_results
from explorer.analyse.derived import Derived
from explorer.analyse.routes import DEFAULT_THRESHOLD, attention_rows_from_store, build_routes
from explorer.model.loading import LoadConfig, LoadError, load_model
from explorer.record.capture import DEFAULT_PARTS, CaptureOptions, PromptTooLongError, capture
from explorer.record.capture_file import open_capture

HELP = "which tokens, heads and MLPs carried a prediction: routes graph and logit attribution as JSON"


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file")
    src.add_argument("--capture", type=Path, help="a capture file recorded with the 'components' part")
    p.add_argument("--model", default="embedded", help="preset key, hub id, local folder or .gguf path")
    p.add_argument("--precision", default="nf4", choices=["nf4", "fp4", "int8", "bf16", "fp16", "fp32"])
    p.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    p.add_argument("--position", type=int, default=-1, help="token position to explain (default: the last)")
    p.add_argument("--target", type=int, help="token id whose logit to attribute (default: the top prediction)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"keep edges whose importance exceeds this share (default {DEFAULT_THRESHOLD})")
    p.add_argument("--top", type=int, default=20, help="attributions to list")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--save-capture", type=Path, help="also write the capture (with components) here")


def _capture(args: argparse.Namespace):
    if args.capture is not None:
        cap = open_capture(args.capture)
        if cap.components is None or cap.attention is None:
            raise ValueError(f"{args.capture} has no components or attention; record it with "
                             "`capture --parts ...,components`")
        return cap, None
    prompt = args.prompt if args.prompt is not None else args.prompt_file.read_text(encoding="utf-8")
    loaded = load_model(LoadConfig(source=args.model, precision=args.precision))
    options = CaptureOptions(parts=DEFAULT_PARTS | {"components"}, model_name=loaded.name)
    source = [{"role": "user", "content": prompt}] if args.chat else prompt
    cap = capture(loaded.model, loaded.tokenizer, source, options)
    if cap.components is None:
        raise ValueError("components could not be recorded: " + "; ".join(cap.notes))
    return cap, loaded.tokenizer


def cmd_routes(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        cap, tokenizer = _capture(args)
    except (LoadError, PromptTooLongError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    try:
        attribution = direct_logit_attribution(cap.components, args.position, args.target)
        graph = build_routes(cap.components, attention_rows_from_store(cap.attention), args.position,
                             args.threshold, cap.token_texts)
    except (KeyError, LookupError, IndexError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t2 = time.perf_counter()
    results = Derived()
    if tokenizer is not None:
        results.learn_texts([attribution.target], lambda i: tokenizer.decode([i]))
    result = {"model": cap.model_name, "tokens": cap.token_texts,
              "target_text": results.token_text(cap, attribution.target),
              "attribution": attribution.to_dict(args.top), "routes": graph.to_dict(), "notes": cap.notes}
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.save_capture:
        save_with_results(cap, str(args.save_capture), results)
    print(f"explained {result['target_text']!r} at position {graph.position} of {cap.num_tokens} tokens: "
          f"{len(graph.nodes)} nodes, {len(graph.edges)} edges over {args.threshold}; "
          f"capture {t1 - t0:.1f} s, analysis {t2 - t1:.2f} s; wrote {args.out}")
    for row in attribution.ranked(5):
        where = f"layer {row['layer']}" + (f" head {row['head']}" if row["head"] is not None else "")
        print(f"  {row['part']:>14} {where:<18} {row['value']:+.3f}")
    return 0
