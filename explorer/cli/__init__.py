"""Command line: `python -m explorer <command> ...`; the table of commands is in explorer/cli/main.py."""
