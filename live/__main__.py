"""``python -m live live|demo|cameras …``: the live subcommands on their own (same as ``splinecam …``)."""

from __future__ import annotations

import argparse
import sys

from engines.errors import SplinecamError
from live.commands import add_live_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m live")
    add_live_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SplinecamError as exc:
        print(f"splinecam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("splinecam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
