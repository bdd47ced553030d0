"""``splinecam``: one console command; each package registers its own subcommands.

    splinecam.live       live, demo, animate, cameras
    splinecam.engines    export
    splinecam.training   prepare-data, train, train-avd, evaluate, export-weights
    splinecam.benchmarks bench

The registrations are imported statically here, at the top of the dependency graph; each package's
``cli`` module keeps its heavy imports inside its handlers, so ``splinecam --help`` stays fast.
User errors (:class:`splinecam.engines.errors.SplinecamError`) print one line, ``splinecam: error: …``,
and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from splinecam import __version__
from splinecam.benchmarks import cli as benchmarks_cli
from splinecam.engines import cli as engines_cli
from splinecam.engines.errors import SplinecamError
from splinecam.live import cli as live_cli
from splinecam.training import cli as training_cli

REGISTRARS = (live_cli.register, engines_cli.register, training_cli.register, benchmarks_cli.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splinecam",
        description="Drive a portrait from your webcam, live, into a video call (Thin-Plate Spline Motion Model). "
                    "Start with 'splinecam demo'.")
    parser.add_argument("--version", action="version", version=f"splinecam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
