"""mediapipe graphs built with their start-up chatter silenced.

mediapipe's C++ code (TensorFlow Lite delegates, absl warnings) prints to file descriptor 2 whatever
Python's logging says, once, while a graph is built and runs its first inference. The only way to keep
that off the terminal is to point fd 2 at /dev/null — for the whole process, so whatever another
thread writes to stderr in that window is lost too. The window is therefore kept to mediapipe's own
start-up: a :class:`QuietGraph`'s construction and one warm-up inference on a blank frame, nothing else; concurrent
start-ups share one redirection (a lock and a count: the first in redirects, the last out restores), so
two threads can never leave fd 2 pointing at /dev/null.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextlib.contextmanager
def native_stderr_silenced():
    """fd 2 → /dev/null for the block (see the module's docstring: only around mediapipe's start-up)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            sys.stderr.flush()
            try:
                saved = os.dup(2)
            except OSError:
                saved = None
            if saved is not None:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 2)
            _saved = saved
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                sys.stderr.flush()
                os.dup2(_saved, 2)
                os.close(_saved)
                _saved = None


#: the warm-up frame a graph runs once while silenced (no face in it)
WARMUP_FRAME_SIDE = 64


class QuietGraph:
    """A mediapipe solution built, and run once on a blank frame, with the native stderr silenced — one
    window, so that it is over only when the graph has started: mediapipe opens its calculators (where
    TensorFlow Lite prints) on its own threads after construction returns, and under load that came after
    a separate construction window had closed (a CI run printed four lines of chatter before splinecam's
    one-line "no face" error). Processing the blank frame waits until the graph is idle, so every
    calculator is open by then. Every later call runs as is. Use it from one thread at a time."""

    def __init__(self, factory):
        import numpy as np

        with native_stderr_silenced():
            self._graph = factory()
            self._graph.process(np.zeros((WARMUP_FRAME_SIDE, WARMUP_FRAME_SIDE, 3), np.uint8))

    def process(self, image):
        return self._graph.process(image)

    def close(self) -> None:
        self._graph.close()
