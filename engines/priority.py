"""CPU priority of the loop's helpers: inference is the work, everything else yields to it (issue #12).

On two cores the live recorder's H.264 encoder (an FFmpeg child process) and the loop's helper threads
compete with the networks' intra-op threads; a parallel region that loses one of its threads for a few
milliseconds waits for it (a straggler), so the networks slowed down by a quarter beside the encoder.
Lowering the helpers' scheduling priority (a higher Unix nice value) lets the networks run on every
core when they have work and the helpers fill the gaps between frames — the encoder's bounded queue
absorbs the wait. Raising a nice value needs no privilege; where the platform cannot do it (not Linux
/ macOS) these calls do nothing and say so by returning False.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

#: nice value added to the live recorder's encoder process: the lowest priority
ENCODER_NICE = 19
#: nice value added to the recorder's feeder thread (the steady sender keeps its priority: it paces the output)
HELPER_NICE = 10


def lower_process_priority(pid: int, by: int) -> bool:
    """Add ``by`` to the nice value of process ``pid`` (its main thread; threads it starts later inherit
    it). Returns whether it took effect."""
    if not hasattr(os, "setpriority") or by <= 0:
        return False
    try:
        now = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, now + by))
        return True
    except OSError:  # the process is gone, or the platform refuses
        return False


def lower_this_thread_priority(by: int) -> bool:
    """Add ``by`` to the nice value of the calling thread only (Linux: each thread has its own). Elsewhere
    (macOS: the value is per process) it does nothing and returns False."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    return lower_process_priority(threading.get_native_id(), by)


class InferenceGate:
    """Whether this process's networks are running, for helpers that can wait for a gap.

    The live loop wraps its network calls (face tracking, keypoints, generator) in ``with GATE.busy():``;
    the recorder's feeder calls ``GATE.wait_idle(period)`` before it hands FFmpeg the next frame, so that
    the encoding (a few ms of one core per 1280×720 frame) starts when the networks have just finished,
    not in the middle of their parallel regions. It waits at most ``period`` (one frame of the
    recording): on a CPU too slow to leave gaps the frame is written anyway and the recording stays
    complete. Measured on a 2-core AMD EPYC Zen 4 VM, medians of 10 alternated runs per mode
    (``python -m splinecam.benchmarks.paced_vs_unpaced``): `demo --realtime` generate within 9 % (bf16) and
    1 % (fp32) of the unpaced run's, p95 40 ms, every frame recorded; before, on one network thread to
    keep a core for the encoder, +26 % and p95 66 ms.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no network runs, at most ``timeout`` seconds; returns whether they are idle."""
        return self._idle.wait(timeout)


#: the process's one gate (one live loop per process)
GATE = InferenceGate()
