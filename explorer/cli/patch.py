"""`patch`: activation patching between a clean and a corrupted prompt, both grids as JSON.

Arguments are checked before the model loads (the slow part); the prompts' token lengths, which
need the tokenizer, before any forward.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from explorer.cli.args import load_config, positive_int, text_arg, writable_out
from explorer.model.errors import BadArgument
from explorer.model.precisions import LOAD_PRECISIONS
from explorer.model.safe_write import write_text
from explorer.record.token_text import token_text

HELP = "activation patching (causal tracing) between a clean and a corrupted prompt, as JSON"
SITES = ("resid", "head")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clean", required=True, help="the clean prompt")
    p.add_argument("--corrupt", required=True, help="the corrupted prompt, of the same token length")
    p.add_argument("--model", default="embedded", help="preset key, hub id, local folder or .gguf path")
    p.add_argument("--precision", default="nf4", choices=LOAD_PRECISIONS)
    p.add_argument("--answer", help="the answer token's text (default: the clean run's top token)")
    p.add_argument("--foil", help="the second token's text (default: the corrupted run's top token)")
    p.add_argument("--sites", default="resid,head", help="resid, head or both (default resid,head)")
    p.add_argument("--batch-rows", type=positive_int, help="patched copies per forward (default: by memory)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")


def _sites(text: str) -> list[str]:
    sites = [s.strip() for s in text.split(",") if s.strip()]
    if not sites or any(s not in SITES for s in sites):
        raise BadArgument(f"--sites takes resid, head or resid,head, not {text[:30]!r}.")
    return sites


def _token(tokenizer, text: str | None, what: str) -> int | None:
    if text is None:
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise BadArgument(f"{what} {text[:30]!r} is {len(ids)} tokens; give the text of one token "
                          "(often with its leading space, e.g. ' Paris').")
    return int(ids[0])


def cmd_patch(args: argparse.Namespace) -> int:
    from explorer.analyse.patching import check_lengths, patch_heads, patch_residual, prepare
    from explorer.model.loading import load_model

    clean, corrupt = text_arg(args.clean, "--clean"), text_arg(args.corrupt, "--corrupt")
    sites = _sites(args.sites)
    out = writable_out(args.out)
    for name in ("answer", "foil"):
        if getattr(args, name) is not None:
            text_arg(getattr(args, name), f"--{name}")
    loaded = load_model(load_config(args.model, args.precision))
    for notice in loaded.notices:
        print(f"note: {notice}", file=sys.stderr)
    tok = loaded.tokenizer
    import torch
    clean_ids = torch.tensor(tok(clean)["input_ids"])
    corrupt_ids = torch.tensor(tok(corrupt)["input_ids"])
    check_lengths(clean_ids, corrupt_ids)
    start = time.perf_counter()
    setup = prepare(loaded.model, clean_ids, corrupt_ids, _token(tok, args.answer, "--answer"),
                    _token(tok, args.foil, "--foil"))
    report = {"model": loaded.name, "precision": args.precision, "clean": clean, "corrupt": corrupt,
              "tokens": [token_text(tok, i) for i in clean_ids.tolist()],      # byte pieces as <0xD7>, as the views
              "answer_text": token_text(tok, setup.answer), "foil_text": token_text(tok, setup.foil)}

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} patches", end="", file=sys.stderr, flush=True)
    for site in sites:
        run = patch_residual if site == "resid" else patch_heads
        report[site] = run(loaded.model, setup, args.batch_rows, progress).to_dict()
        print(file=sys.stderr)
    report["seconds"] = time.perf_counter() - start
    write_text(out, json.dumps(report, indent=1))   # through a temporary file beside it, like every output
    print(f"wrote {out} ({', '.join(sites)} patching, {report['seconds']:.1f} s); answer "
          f"{report['answer_text']!r} over {report['foil_text']!r}")
    return 0


__all__ = ["HELP", "cmd_patch", "configure"]
