"""``splinecam``: one console command; each package registers its own subcommands.

    splinecam.live       live, demo, animate, cameras
    splinecam.engines    export
    splinecam.training   prepare-data, train, train-avd, evaluate, export-weights
    splinecam.benchmarks bench

The registrations are imported statically here, at the top of the dependency graph; each package's
``cli`` module keeps its heavy imports inside its handlers, so ``splinecam --help`` stays fast.
User errors (:class:`splinecam.engines.errors.SplinecamError`) print one line, ``splinecam: error: …``,
and exit 2. A signal (engines/interrupts.py) ends the command the way Ctrl-C does — what it was
writing is finalised — and exits 128 + the signal number: 130 SIGINT, 143 SIGTERM, 129 SIGHUP. Nothing
else is caught here: an unexpected exception shows its traceback.
"""

from __future__ import annotations

import argparse
import sys

from splinecam import __version__
from splinecam.benchmarks import cli as benchmarks_cli
from splinecam.engines import cli as engines_cli
from splinecam.engines.errors import SplinecamError
from splinecam.engines.interrupts import as_interrupted, exit_now, hurry, received, signals_as_interrupts
from splinecam.live import cli as live_cli
from splinecam.training import cli as training_cli

REGISTRARS = (live_cli.register, engines_cli.register, training_cli.register, benchmarks_cli.register)


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``splinecam live: error: argument --fps: …``), exit 2;
    every subcommand's parser is one too (argparse makes subparsers of the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="splinecam",
        description="Drive a portrait from your webcam, live, into a video call (Thin-Plate Spline Motion Model). "
                    "Start with 'splinecam demo'.")
    parser.add_argument("--version", action="version", version=f"splinecam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def _say(line: str) -> None:
    try:  # after a hang-up the terminal may be gone
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None, leave_on_signal: bool = False) -> int:
    """Run one command; returns its exit code. ``leave_on_signal`` (the ``splinecam`` program itself,
    :func:`console`): a command that a signal stopped exits the process here, while splinecam's
    handlers are still installed — a second Ctrl-C landing after the first one's clean-up then still
    exits 130, instead of finding Python's default handler and killing the process by SIGINT (a CI
    run's ``test_live_double_ctrl_c`` saw rc -2 once). A library caller (``leave_on_signal=False``)
    gets the code back and its handlers restored."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with signals_as_interrupts():
        try:
            code = int(args.func(args) or 0)
        except SplinecamError as exc:
            _say(f"splinecam: error: {exc}")
            code = 2
        except KeyboardInterrupt as exc:
            stop = as_interrupted(exc)
            _say(f"splinecam: stopped by {stop.name}")
            code = stop.exit_code
        if leave_on_signal and received():  # everything is written: leave before the handlers go
            exit_now(code)
    if hurry():  # a second signal: leave now (native threads may still be busy)
        exit_now(code)
    return code


def console() -> None:
    """The ``splinecam`` program (console script, ``python -m splinecam``)."""
    sys.exit(main(leave_on_signal=True))


if __name__ == "__main__":
    console()
