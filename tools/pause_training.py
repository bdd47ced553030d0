#!/usr/bin/env python3
"""Development tool: run a command (a benchmark) with this machine's training runs paused.

    python tools/pause_training.py [--pattern REGEX] [--wait-quiet S] -- splinecam bench --config vox-256 …

Not part of the installed package (splinecam itself never sends a signal to another process): on a
shared development machine a training run steals the cores a benchmark measures, so this wrapper
SIGSTOPs every process whose command line matches ``--pattern`` (default: a training run —
``torchrun`` / ``splinecam train`` / ``splinecam.training``) for the duration of the command, stops
again every second whatever was resumed or restarted meanwhile, and always SIGCONTs them afterwards —
also when the wrapper itself gets SIGTERM / SIGINT. One wrapped benchmark at a time per machine (an
exclusive flock on ``$TMPDIR/splinecam-benchmark.lock``), so two never pause and resume the same
processes under each other. ``--wait-quiet S`` first waits up to S seconds for no other process to use
≥ 20 % of a core (matching processes aside: they get paused). Exit status: the command's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

TRAINING_PATTERN = r"torchrun|splinecam train|splinecam\.training|-m training"
BENCH_LOCK = Path(os.environ.get("TMPDIR", "/tmp")) / "splinecam-benchmark.lock"


def _descendants(pid: int) -> set[int]:
    """pid and every process below it (from /proc: the wrapped command is never paused)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += children.get(p, [])
    return out


class Pauser:
    """SIGSTOPs other processes whose command line matches ``pattern``; :meth:`refresh` stops them again
    (someone may have resumed one) and catches ones started since; :meth:`resume` SIGCONTs them all."""

    def __init__(self, pattern: str | None, spare: set[int] | None = None):
        self.pattern = pattern
        self.spare = set(spare or ()) | {os.getpid(), os.getppid()}
        self.stopped: list[int] = []

    def refresh(self, child: int | None = None) -> list[int]:
        if not self.pattern:
            return []
        spare = self.spare | (_descendants(child) if child else set())
        out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        new = []
        for line in out.splitlines():
            pid_s, _, args = line.strip().partition(" ")
            if (pid_s.isdigit() and int(pid_s) not in spare and re.search(self.pattern, args)
                    and "pause_training" not in args):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_s), signal.SIGSTOP)  # again, if already stopped: idempotent
                    if int(pid_s) not in self.stopped:
                        self.stopped.append(int(pid_s))
                        new.append(int(pid_s))
        if new:
            print(f"pause_training: paused {new} (matching {self.pattern!r})", file=sys.stderr, flush=True)
        return new

    def resume(self) -> None:
        for pid in self.stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def benchmark_lock() -> Iterator[None]:
    """One wrapped benchmark at a time on this machine (waits for the other one)."""
    import fcntl

    with open(BENCH_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"pause_training: waiting for another benchmark to finish ({BENCH_LOCK}) …", file=sys.stderr,
                  flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def paused(pattern: str | None) -> Iterator[Pauser]:
    """Pause matching processes for the block; SIGCONT them afterwards, always (SIGTERM / SIGINT to this
    process included: they are resumed before the signal takes its course)."""
    pauser = Pauser(pattern)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum, frame):
        pauser.resume()
        signal.signal(signum, previous[signum])
        os.kill(os.getpid(), signum)

    try:
        for s in previous:
            signal.signal(s, on_signal)
        yield pauser
    finally:
        pauser.resume()
        for s, h in previous.items():
            signal.signal(s, h)
        if pauser.stopped:
            print(f"pause_training: resumed {pauser.stopped}", file=sys.stderr, flush=True)


def wait_quiet(seconds: float, pattern: str | None) -> None:
    """Wait up to ``seconds`` until no other process (but those matching ``pattern``) is busy."""
    from splinecam.benchmarks.conditions import busy_processes

    def matches(entry: str) -> bool:
        try:
            cmd = Path(f"/proc/{entry.split()[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return False
        return bool(pattern) and re.search(pattern, cmd) is not None

    deadline = time.time() + seconds
    while time.time() < deadline:
        busy = [b for b in busy_processes() if not matches(b)]
        if not busy:
            return
        print(f"pause_training: waiting for a quiet CPU: {', '.join(busy)}", file=sys.stderr, flush=True)
        time.sleep(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s [options] -- COMMAND …")
    ap.add_argument("--pattern", default=TRAINING_PATTERN, help=f"processes to pause (regex; default {TRAINING_PATTERN!r})")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="S", help="first wait up to S s for a quiet CPU")
    ap.add_argument("--every", type=float, default=1.0, metavar="S", help="re-pause every S s (default 1)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    with benchmark_lock():
        if args.wait_quiet:
            wait_quiet(args.wait_quiet, args.pattern)
        with paused(args.pattern) as pauser:
            pauser.refresh()
            child = subprocess.Popen(command)
            while child.poll() is None:
                pauser.refresh(child.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=args.every)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
