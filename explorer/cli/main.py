"""`python -m explorer <command> ...`: one explicit table of subcommands.

Each command lives in its own module as a `configure(parser)` / `handler(args) -> exit status` pair;
the table below is the only place that lists them, so nothing registers itself on import.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from explorer.cli import capture as capture_cmd
from explorer.cli import compare as compare_cmd
from explorer.cli import generate as generate_cmd
from explorer.cli import patch as patch_cmd
from explorer.cli import routes as routes_cmd

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    handler: Handler


COMMANDS: tuple[Command, ...] = (
    Command("prepare", generate_cmd.PREPARE_HELP, generate_cmd.configure_prepare, generate_cmd.cmd_prepare),
    Command("generate", generate_cmd.GENERATE_HELP, generate_cmd.configure_generate, generate_cmd.cmd_generate),
    Command("capture", capture_cmd.CAPTURE_HELP, capture_cmd.configure_capture, capture_cmd.cmd_capture),
    Command("show", capture_cmd.SHOW_HELP, capture_cmd.configure_show, capture_cmd.cmd_show),
    Command("compare", compare_cmd.HELP, compare_cmd.configure_compare, compare_cmd.cmd_compare),
    Command("routes", routes_cmd.HELP, routes_cmd.configure, routes_cmd.cmd_routes),
    Command("patch", patch_cmd.HELP, patch_cmd.configure, patch_cmd.cmd_patch),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m explorer", description="LLM Explorer command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. Whatever goes wrong ends as `error: …` on stderr and exit status 2:
    handlers raise typed errors, and this is the last resort for anything they did not expect."""
    from explorer.model.errors import user_message

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one boundary: never a traceback
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
