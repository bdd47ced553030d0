"""``splinecam``: one console command; each package registers its own subcommands.

    engines    export
    live       live, demo, animate, cameras
    training   prepare-data, train, train-avd, evaluate, export-weights
    benchmarks bench

User errors (engines.errors.SplinecamError) print one line, ``splinecam: error: …``, and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from splinecam import __version__

PACKAGES = ("live", "engines", "training", "benchmarks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splinecam",
        description="Drive a portrait from your webcam, live, into a video call (Thin-Plate Spline Motion Model). "
                    "Start with 'splinecam demo'.")
    parser.add_argument("--version", action="version", version=f"splinecam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for package in PACKAGES:
        importlib.import_module(f"{package}.cli").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from engines.errors import SplinecamError

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
