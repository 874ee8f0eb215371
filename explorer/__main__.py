"""`python -m explorer ...` entry point; the commands live in explorer/cli/main.py."""
import sys

from explorer.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
