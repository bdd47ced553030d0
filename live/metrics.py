"""Live metrics: frame counts, FPS, end-to-end latency and per-stage times (``--metrics OUT.json``).

Latency is measured, not guessed: every frame carries the ``time.perf_counter()`` stamp taken when
it was captured, and the sink side records ``now - stamp`` when it has handed the frame to the
sinks (virtual camera sent, recorder queued, preview shown). A frame repeated by the steady-fps
sender is counted once, at its first send. Thread-safe: counters are bumped from the capture,
processing and sender threads.

``LiveMetrics.summary()`` is a :class:`RunSummary` (typed: ``summary.frames["no_face"]``,
``summary.fps.processed``, ``summary.latency_ms.p50``, ``summary.stopped_by``); its JSON layout
(``RunSummary.to_json()``, what ``--metrics`` writes)::

    {"frames": {"captured", "processed", "dropped", "output", "repeated", "no_face",
                "recorder_dropped", "reconnects", "bad_output"},   # bad_output: generator output refused
     "fps": {"processed", "output"},            # per second of wall time since the first frame
     "latency_ms": {"p50", "p95", "max", "mean", "count"},
     "queued_ms": {"p50", "p95", "max", "mean", "count"},   # of that: capture → the processing thread takes it
     "stages_ms": {"capture", "track", "keypoints", "normalise", "generate", "compose", "sinks", …},
     "loop_ms": mean per-frame time of the loop's own stages (everything but the networks),
     "backend", "device", "precision", "source", "output_size", "duration_s",
     "remote": {…}  with --remote (engines/remote/client.py: frames the worker generated, round trip,
                    network and inference time, bytes per frame),
     "stream": {…}  with --serve (live/stream_server.py: viewers, frames served / skipped, JPEG encode)}
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splinecam.engines.backends.base import StageTimer
from splinecam.engines.outputs import write_text_atomic

NETWORK_STAGES = ("keypoints", "generate")


@dataclass
class Rates:
    """Frames per second of wall time since the first frame."""

    processed: float
    output: float


@dataclass
class Latency:
    """A per-frame time's distribution, ms (None without a measured frame): capture → sinks (``latency_ms``), or
    capture → the processing thread taking the frame (``queued_ms``: the part of the latency spent waiting for the
    loop, not in it)."""

    p50: float | None
    p95: float | None
    max: float | None
    mean: float | None
    count: int

    @classmethod
    def of(cls, ms: np.ndarray, max_ms: float | None = None, count: int | None = None) -> "Latency":
        """The distribution of ``ms`` (1-D, ms), rounded to 0.01 ms; ``max_ms`` / ``count`` when they were kept
        beyond the samples (a bounded history); all None and 0 without a sample."""
        if not ms.size:
            return cls(None, None, None, None, 0)
        return cls(round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 95)), 2),
                   round(float(ms.max() if max_ms is None else max_ms), 2), round(float(ms.mean()), 2),
                   int(ms.size if count is None else count))


@dataclass
class RunSummary:
    """One live run's figures. ``frames``: the counters (captured, processed, dropped, output, repeated,
    no_face, recorder_dropped, reconnects, bad_output, and any other a stage counted, e.g.
    backend_offline); ``info``: what the run was (backend, device, precision, source, output_size,
    paced, fps_target, stopped_by, mode — whatever was set); ``sections``: the reports registered in
    ``LiveMetrics.sections`` by name (remote, stream …)."""

    frames: dict[str, int]
    fps: Rates
    latency_ms: Latency
    stages_ms: dict[str, float]
    loop_ms: float
    info: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    sections: dict[str, dict] = field(default_factory=dict)
    queued_ms: Latency = field(default_factory=lambda: Latency(None, None, None, None, 0))

    @property
    def stopped_by(self) -> str | None:
        return self.info.get("stopped_by")

    @property
    def backend(self) -> str | None:
        return self.info.get("backend")

    @property
    def output_size(self) -> str | None:
        return self.info.get("output_size")

    def to_json(self) -> dict:
        """The ``--metrics`` JSON (the layout in the module docstring, unchanged)."""
        return {"frames": dict(self.frames), "fps": asdict(self.fps), "latency_ms": asdict(self.latency_ms),
                "queued_ms": asdict(self.queued_ms), "stages_ms": dict(self.stages_ms), "loop_ms": self.loop_ms, **self.info,
                "duration_s": self.duration_s, **self.sections}


@dataclass
class LiveMetrics:
    """Counters and timings of one live run. ``info`` holds backend/device/… strings."""

    info: dict = field(default_factory=dict)
    stages: StageTimer = field(default_factory=StageTimer)
    window: int = 30  # frames in the rolling FPS / latency shown on the preview
    sections: dict = field(default_factory=dict)  # name → callable returning a dict, added to the summary

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {k: 0 for k in ("captured", "processed", "dropped", "output", "repeated", "no_face",
                                      "recorder_dropped", "reconnects", "bad_output")}
        self._latency = deque(maxlen=100_000)  # seconds; bounded so a day-long run stays flat
        self._latency_max = 0.0
        self._latency_n = 0
        self._queued = deque(maxlen=100_000)  # seconds, capture → processing start
        self._recent_processed = deque(maxlen=self.window)
        self._recent_latency = deque(maxlen=self.window)
        self._t_first: float | None = None
        self._t_last: float | None = None

    # --- recording
    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def set_count(self, key: str, value: int) -> None:
        with self._lock:
            self.counts[key] = int(value)

    def processed(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            self.counts["processed"] += 1
            self._recent_processed.append(now)
            if self._t_first is None:
                self._t_first = now
            self._t_last = now

    def output(self, capture_stamp: float | None, repeated: bool, now: float | None = None) -> None:
        """A frame was handed to the sinks; ``capture_stamp`` None for frames not made from a
        capture (the avatar still at start-up)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            self.counts["output"] += 1
            if self._t_first is None:
                self._t_first = now
            self._t_last = now
            if repeated:
                self.counts["repeated"] += 1
                return
            if capture_stamp is not None:
                lat = max(0.0, now - capture_stamp)
                self._latency.append(lat)
                self._recent_latency.append(lat)
                self._latency_max = max(self._latency_max, lat)
                self._latency_n += 1

    def queued(self, wait_s: float) -> None:
        """The processing thread took a frame ``wait_s`` after it was captured."""
        with self._lock:
            self._queued.append(max(0.0, float(wait_s)))

    # --- reading
    def recent_fps(self) -> float:
        with self._lock:
            ts = list(self._recent_processed)
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return 0.0
        return (len(ts) - 1) / (ts[-1] - ts[0])

    def recent_latency_ms(self) -> float | None:
        with self._lock:
            lat = list(self._recent_latency)
        return float(np.median(lat) * 1000.0) if lat else None

    def summary(self) -> RunSummary:
        with self._lock:
            counts = dict(self.counts)
            lat = np.asarray(self._latency, dtype=np.float64) * 1000.0
            lat_max, lat_n = self._latency_max * 1000.0, self._latency_n
            queued = np.asarray(self._queued, dtype=np.float64) * 1000.0
            t0, t1 = self._t_first, self._t_last
        duration = (t1 - t0) if (t0 is not None and t1 is not None) else 0.0
        stages = {k: round(v, 3) for k, v in self.stages.mean_ms().items()}
        loop = sum(v for k, v in stages.items() if k not in NETWORK_STAGES)

        def rate(n: int) -> float:
            return round((n - 1) / duration, 3) if duration > 0 and n > 1 else 0.0

        latency = Latency.of(lat, lat_max, lat_n)
        waited = Latency.of(queued)
        return RunSummary(frames=counts, fps=Rates(rate(counts["processed"]), rate(counts["output"])),
                          latency_ms=latency, stages_ms=stages, loop_ms=round(loop, 3), info=dict(self.info),
                          duration_s=round(duration, 3),
                          sections={name: report() for name, report in self.sections.items()}, queued_ms=waited)

    def write(self, path: str | Path) -> RunSummary:
        """Write :meth:`summary` as JSON (atomically); returns it."""
        summary = self.summary()
        write_text_atomic(Path(path), json.dumps(summary.to_json(), indent=2) + "\n", "--metrics")
        return summary


def _bad(frames: dict) -> str:
    n = frames.get("bad_output", 0)
    return f", {n} held (generator output refused)" if n else ""


def format_summary(summary: RunSummary) -> str:
    """A few human lines from :meth:`LiveMetrics.summary`."""
    f, lat, info = summary.frames, summary.latency_ms, summary.info
    stages = " ".join(f"{k} {v:.1f}" for k, v in summary.stages_ms.items())
    lat_txt = (f"latency p50 {lat.p50:.0f} ms, p95 {lat.p95:.0f} ms, max {lat.max:.0f} ms"
               if lat.count else "latency n/a")
    if lat.count and summary.queued_ms.count:
        lat_txt += f" (of it waiting for the loop: p95 {summary.queued_ms.p95:.0f} ms)"
    return (f"frames: {f['captured']} captured, {f['processed']} processed, {f['dropped']} dropped, "
            f"{f['output']} sent ({f['repeated']} repeats), {f['no_face']} without a face"
            f"{_bad(f)}\n"
            f"fps: {summary.fps.processed:.2f} processed, {summary.fps.output:.2f} sent; {lat_txt}\n"
            f"stages (ms/frame): {stages}; loop's own work {summary.loop_ms:.1f} ms\n"
            f"backend {info.get('backend', '?')} on {info.get('device', '?')} ({info.get('precision', '?')})")
