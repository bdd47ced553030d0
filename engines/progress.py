"""A small progress line for long work (animation, export, engine builds, data preparation).

Writes ``label  12/169  7%  3.1 it/s  eta 52s`` to stderr, redrawn in place on a terminal and
every few seconds otherwise (logs stay short).
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, stream=None, min_interval: float | None = None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval if min_interval is not None else (0.2 if self.tty else 5.0)
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._drawn_at = -1

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.min_interval or (self.total and self.done >= self.total):
            self._last = now
            self._draw(note)

    def _draw(self, note: str = "") -> None:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text = f"{self.label}  {self.done}/{self.total}  {100 * self.done // self.total:3d}%  {rate:.1f} it/s  eta {eta:.0f}s"
        else:
            text = f"{self.label}  {self.done}  {rate:.1f} it/s  {elapsed:.0f}s"
        if note:
            text += f"  {note}"
        self.stream.write(("\r" + text) if self.tty else (text + "\n"))
        self.stream.flush()
        self._drawn_at = self.done

    def close(self, note: str = "") -> None:
        if self._drawn_at != self.done or note:
            self._draw(note)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
