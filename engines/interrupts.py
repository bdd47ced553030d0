"""How splinecam stops on a signal: Ctrl-C (SIGINT), a service manager's stop (SIGTERM), a closed
terminal (SIGHUP) — finishing what it wrote, and exiting with the conventional code.

    with signals_as_interrupts():        # splinecam/cli.py main(), around the command
        run_the_command()                # raises Interrupted(signum) at the first signal
    except Interrupted as stop:          # → stop.exit_code: 130 / 143 / 129

* The first signal raises :class:`Interrupted` (a ``KeyboardInterrupt``, so every ``finally`` and
  ``except KeyboardInterrupt`` already in place runs) in the main thread. Writers then finish:
  the live loop stops after the frame in flight, the recorder writes the frames it holds, FFmpeg
  closes the file — a playable video of the frames made so far.
* A second signal does not raise (an exception in the middle of that clean-up would lose the file):
  it sets :func:`hurry`. Whatever waits checks it: the recorder drops the frames still queued, the
  live loop stops waiting for the frame in flight, and the command exits right after FFmpeg has
  closed the file (``os._exit`` past interpreter shutdown, where native threads still running would
  abort the process). Further signals change nothing.
* FFmpeg and other helpers run in their own process group (:func:`child_process_kwargs`), so the
  terminal's Ctrl-C — sent to the whole foreground group — reaches splinecam only, and splinecam
  closes them cleanly. On Windows the equivalent is ``CREATE_NEW_PROCESS_GROUP`` (untested here).

Exit codes: 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP); user errors exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from typing import Iterator

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

_hurry = threading.Event()
_received: list[int] = []
_defer = {"depth": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT / SIGTERM / SIGHUP. ``signum``, ``name``
    ("SIGINT"), ``exit_code`` (128 + signum)."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = int(signum)
        super().__init__(self.name)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def as_interrupted(exc: BaseException) -> Interrupted:
    """A plain KeyboardInterrupt (Python's own SIGINT handler) as Interrupted(SIGINT)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


def hurry() -> bool:
    """True once a second signal arrived: stop waiting, keep what is written, exit."""
    return _hurry.is_set()


def received() -> list[int]:
    """The signals received since :func:`signals_as_interrupts` was entered, in order."""
    return list(_received)


def _handler(signum, frame) -> None:
    _received.append(signum)
    if len(_received) == 1:
        if _defer["depth"]:
            _defer["pending"] = signum  # raised when the clean-up in progress is done
            return
        raise Interrupted(signum)
    if not _hurry.is_set():
        _hurry.set()
        try:
            os.write(2, b"splinecam: stopping now (keeping what was written)\n")
        except OSError:
            pass


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Install the handlers (main thread only; elsewhere a no-op) and restore the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _hurry.clear()
    _received.clear()
    _defer["pending"] = None
    previous = {}
    for s in SIGNALS:
        try:
            previous[s] = signal.signal(s, _handler)
        except (ValueError, OSError):  # pragma: no cover - exotic platforms
            pass
    try:
        yield
    finally:
        for s, h in previous.items():
            try:
                signal.signal(s, h)
            except (ValueError, OSError):  # pragma: no cover
                pass


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that finishes what it writes: a first signal arriving inside it is raised as
    :class:`Interrupted` when the (outermost) block ends, not in its middle. A plain
    ``KeyboardInterrupt`` (no handlers installed: tests, a library caller) is not deferred. Signals
    reach the main thread only, so elsewhere this is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _defer["depth"] += 1
    try:
        yield
    finally:
        _defer["depth"] -= 1
        pending = _defer["pending"] if _defer["depth"] == 0 else None
        if pending is not None:
            _defer["pending"] = None
            if sys.exc_info()[0] is None:
                raise Interrupted(pending)


def child_process_kwargs() -> dict:
    """``subprocess.Popen`` keyword arguments that put a helper (FFmpeg) in its own process group, out
    of reach of the terminal's Ctrl-C / hang-up; splinecam closes it itself."""
    if sys.platform == "win32":  # pragma: no cover - not testable here
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    return {"start_new_session": True}


def exit_now(code: int) -> None:
    """Flush and leave at once (after a second signal): no interpreter shutdown, whose teardown of
    native threads still running (mediapipe, torch) can abort the process."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
