"""What else the machine was doing during a benchmark, for the record (``conditions`` in the bench JSON):
the load average and the other processes busy on the CPU. Read-only: a benchmark never touches other
processes (pausing a training run for a quiet machine is a development tool, ``tools/pause_training.py``,
outside the installed package)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def busy_processes(min_cpu: float = 20.0, window_s: float = 1.0) -> list[str]:
    """Other processes using ≥ min_cpu % of a core over the next ``window_s`` (sampled from /proc), as
    "pid name pct%". Stopped processes show 0; no /proc (macOS, Windows): none."""
    def sample() -> dict[int, tuple[int, str]]:
        ticks = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                name = text[text.index("(") + 1:text.rindex(")")]
                fields = text[text.rindex(")") + 2:].split()
                ticks[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), name)
        return ticks

    if not Path("/proc/self/stat").exists():
        return []
    hz = os.sysconf("SC_CLK_TCK")
    before = sample()
    time.sleep(window_s)
    after = sample()
    busy = []
    for pid, (t1, name) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        pct = 100.0 * (t1 - before[pid][0]) / hz / window_s
        if pct >= min_cpu:
            busy.append(f"{pid} {name} {pct:.0f}%")
    return busy


def conditions() -> dict:
    """{"load_average": [1, 5, 15 min] or None, "busy_processes": [...]} now."""
    return {"load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "busy_processes": busy_processes()}
