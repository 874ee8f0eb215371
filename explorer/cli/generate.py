"""CLI commands of the foundation: `prepare` (convert the embedded model) and `generate` (stream an answer)."""
from __future__ import annotations

import argparse
import sys

from explorer.cli.args import load_config, non_negative_int, positive_int, text_arg
from explorer.model.errors import BadArgument
from explorer.model.generation import GenerateOptions, conversation, generate_batch, stream_generate
from explorer.model.loading import embedded_model_dir, load_model
from explorer.model.precisions import LOAD_PRECISIONS
from explorer.model.safe_write import check_output_folder
from explorer.record.intervention_hooks import intervene
from explorer.record.interventions import parse as parse_interventions

PREPARE_HELP = "convert the embedded model once into the cache"
GENERATE_HELP = "stream an answer (or a batch of answers) from a model"


def configure_prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="where converted models are cached (default ~/.cache/llm-explorer)")


def cmd_prepare(args: argparse.Namespace) -> int:
    cache_dir = check_output_folder(text_arg(args.cache_dir, "--cache-dir")) if args.cache_dir else None  # before the 30 s
    folder = embedded_model_dir(cache_dir, progress=print)
    print(f"embedded model ready: {folder}")
    return 0


def configure_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="preset key, hub id, local folder or .gguf path")
    p.add_argument("--precision", default="nf4", choices=LOAD_PRECISIONS)
    p.add_argument("--prompt", action="append", required=True,
                   help="the user prompt; repeat it to generate several conversations in one batch")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-new-tokens", type=positive_int, default=128)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=non_negative_int, default=50)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--ablate", default="", help="interventions, e.g. 14.2,20.5 or h3.1x0.5,skip:mlp7 (see README)")


def cmd_generate(args: argparse.Namespace) -> int:
    """Typed errors (a bad argument, a failed load or generation) are raised for main() to print."""
    prompts = [text_arg(p) for p in args.prompt]
    system = text_arg(args.system, "the system prompt") if args.system else None
    if not 0 < args.temperature <= 100 or not 0 < args.top_p <= 1:
        raise BadArgument("--temperature must be in (0, 100] and --top-p in (0, 1].")
    specs = parse_interventions(args.ablate)
    loaded = load_model(load_config(args.model, args.precision))
    for notice in loaded.notices:
        print(f"note: {notice}", file=sys.stderr)
    with intervene(loaded.model, specs):
        return _generate(args, loaded, prompts, system)


def _generate(args: argparse.Namespace, loaded, prompts: list[str], system: str | None) -> int:
    options = GenerateOptions(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty)
    convs = [conversation(p, system) for p in prompts]
    if len(convs) > 1:
        for prompt, result in zip(prompts, generate_batch(loaded, convs, options)):
            print(f"### {prompt}\n{result.text}\n")
        return 0
    stream = stream_generate(loaded, convs[0], options)
    try:
        for chunk in stream:
            print(chunk, end="", flush=True)
    finally:
        print(flush=True)
    r = stream.result
    print(f"[{r.new_tokens} tokens, {r.tokens_per_second:.1f} tokens/s, first token after "
          f"{r.time_to_first_token or 0:.2f} s]", file=sys.stderr)
    return 0

