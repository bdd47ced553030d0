"""Where composed frames go: the virtual camera, a recording; and the steady-fps sender.

    fanout = SinkFanout([open_virtual_camera(size, fps), RecorderSink(path, fps, size)], metrics)
    ticker = SteadySender(fanout, fps, first=avatar_still).start()   # live: steady fps
    ticker.publish(frame)          # the processing hands over each new frame
    fanout.deliver(frame)          # or, for an unpaced file, every frame directly
    ticker.stop(); fanout.close()  # recording finalised, virtual camera released

Privacy: only :class:`OutputFrame` objects reach a sink, and the pipeline makes them from the
avatar (``kind`` "avatar" / "animated") unless the user pressed the pass-through key
("passthrough"). The sender starts on the avatar still, so a meeting never sees the camera while
the model loads.

The steady sender sends one frame per 1/fps slot: a new frame as soon as it is published (no waiting for a
tick), or, when a slot ends without one, the last frame again, so the meeting app never stalls and the
recording keeps the clock; a late slot does not queue up a burst (the schedule skips ahead). The recorder writes in its own thread through a bounded queue: when it falls behind a
live run, frames are dropped from the recording (counted), never from the loop.

The preview window is not a sink (it needs the main thread and shows overlays): live/preview.py.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from splinecam.engines.errors import MediaError
from splinecam.engines.interrupts import hurry
from splinecam.engines.priority import ENCODER_NICE, GATE, HELPER_NICE, lower_this_thread_priority
from splinecam.live.metrics import LiveMetrics

log = logging.getLogger(__name__)

KINDS = ("avatar", "animated", "passthrough")


@dataclass(frozen=True)
class OutputFrame:
    """A composed output frame.

    image: (H, W, 3) uint8 RGB at the output size. capture_stamp: ``perf_counter()`` of the
    camera frame it was made from (None: made from nothing captured, the avatar still at
    start-up). kind: "avatar" (the avatar at rest or holding a pose: no face / start-up),
    "animated" (driven by the face), "passthrough" (the real camera — only on the explicit key).
    index: the processed frame's number (-1 for the start-up still).
    """

    image: np.ndarray
    capture_stamp: float | None
    kind: str
    index: int = -1
    extra: dict = field(default_factory=dict)


class Sink(Protocol):
    name: str

    def send(self, frame: OutputFrame) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- virtual camera


VIRTUAL_CAMERA_HELP = {
    "linux": "no virtual camera device: load one with `sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
             "card_label=splinecam` (Debian/Ubuntu: `sudo apt install v4l2loopback-dkms`) — exclusive_caps=1 lets "
             "browsers and Zoom see it; carrying on without it",
    "other": "no virtual camera device: install OBS Studio and start its Virtual Camera once (Windows/macOS), "
             "then run again; carrying on without it",
}


class VirtualCameraUnavailable(MediaError):
    """No virtual camera device: the message says how to get one; the run carries on."""


class VirtualCameraSink:
    """pyvirtualcam, backend chosen automatically (v4l2loopback on Linux, OBS elsewhere).
    ``device``: e.g. "/dev/video10" when there are several loopback devices."""

    name = "virtual-camera"

    def __init__(self, size: tuple[int, int], fps: float, device: str | None = None, camera_factory=None):
        import pyvirtualcam

        factory = camera_factory or pyvirtualcam.Camera
        try:
            self.cam = factory(width=size[0], height=size[1], fps=float(fps),
                               fmt=pyvirtualcam.PixelFormat.RGB, device=device)
        except Exception as err:  # pyvirtualcam raises RuntimeError with backend-specific text
            key = "linux" if sys.platform.startswith("linux") else "other"
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            if device and "not found" not in detail.lower() and "no v4l2" not in detail.lower():
                raise VirtualCameraUnavailable(f"virtual camera {device}: {detail}; carrying on without it") from None
            raise VirtualCameraUnavailable(VIRTUAL_CAMERA_HELP[key]) from None
        self.device = getattr(self.cam, "device", device) or "?"

    def send(self, frame: OutputFrame) -> None:
        self.cam.send(frame.image)

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            cam.close()


def open_virtual_camera(size: tuple[int, int], fps: float, device: str | None = None,
                        camera_factory=None, say=print) -> VirtualCameraSink | None:
    """The virtual camera, or None after ONE clear line (``say``) saying how to get one."""
    try:
        sink = VirtualCameraSink(size, fps, device, camera_factory)
    except VirtualCameraUnavailable as err:
        say(f"splinecam: {err}")
        return None
    say(f"splinecam: virtual camera {sink.device} ({size[0]}x{size[1]} at {fps:g} fps)")
    return sink


# ----------------------------------------------------------------------------- recorder


#: the live recording's encoder: libx264 "ultrafast" on one thread — a 1280×720 frame in a few ms of one
#: core (issue #12: "veryfast" on every core took a quarter of the networks' time on two cores); the file is
#: larger for the same CRF, which a recording of a call can afford. It runs at the lowest CPU priority
#: (engines/priority.py): the networks take every core when they have a frame, the encoder the gaps.
LIVE_PRESET = "ultrafast"
LIVE_ENCODER_THREADS = 1


class RecorderSink:
    """An H.264 mp4 (engines.media.VideoWriter) written in its own thread.

    ``block``: wait when the bounded queue is full (an unpaced file: every frame recorded) or drop
    the frame and count it (live: the loop never waits for the encoder). ``close()`` drains the
    queue and finalises the file (also after Ctrl-C); after a second signal
    (:func:`splinecam.engines.interrupts.hurry`) the frames still queued are dropped and the file is
    finalised with what was written. ``flag`` / ``inputs``: for the output checks
    (engines/outputs.py: the recording may not be the camera file or the avatar).
    """

    name = "recorder"

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], block: bool = False,
                 max_queue: int = 8, preset: str = LIVE_PRESET, metrics: LiveMetrics | None = None,
                 flag: str = "--record", inputs=(), threads: int | None = LIVE_ENCODER_THREADS):
        from splinecam.engines.media import VideoWriter

        self.path = Path(path)
        self.writer = VideoWriter(self.path, fps, size, preset=preset, threads=threads, nice=ENCODER_NICE,
                                  flag=flag, inputs=inputs)
        self.block = block
        self._period = 1.0 / float(fps)  # the longest wait for the networks' gap
        self.metrics = metrics
        self.dropped = 0
        self.error: Exception | None = None
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="splinecam-recorder", daemon=True)
        self._thread.start()

    def send(self, frame: OutputFrame) -> None:
        if self.error is not None:
            return
        try:
            self._q.put(frame.image, block=self.block, timeout=30.0 if self.block else None)
        except queue.Full:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.count("recorder_dropped")

    def _run(self) -> None:
        lower_this_thread_priority(HELPER_NICE)
        while True:
            image = self._q.get()
            if image is None:
                return
            if self.error is not None:
                continue
            if hurry():  # a second Ctrl-C: keep what is written, drop the rest
                self.dropped += 1
                continue
            try:
                GATE.wait_idle(self._period)  # encode in the networks' gap (engines/priority.py)
                self.writer.write(image)
            except Exception as err:
                self.error = err
                log.error("recording stopped: %s", err)

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        try:
            self.writer.close()
        except MediaError as err:
            if self.error is None:
                self.error = err
        if self.error is not None:
            raise MediaError(f"recording {self.path}: {self.error}")


# ----------------------------------------------------------------------------- fan-out


class SinkFanout:
    """Hands each frame to every sink and records the frame's latency (capture → sinks).

    A sink that raises is closed and removed after one log line: a lost virtual camera must not
    stop the recording, nor the other way round.
    """

    def __init__(self, sinks: list[Sink | None], metrics: LiveMetrics):
        self.sinks: list[Sink] = [s for s in sinks if s is not None]
        self.metrics = metrics
        self.last: OutputFrame | None = None
        self._lock = threading.Lock()

    def deliver(self, frame: OutputFrame, repeated: bool = False) -> None:
        with self._lock:
            t0 = time.perf_counter()
            for sink in list(self.sinks):
                try:
                    sink.send(frame)
                except Exception as err:
                    log.error("%s failed (%s): it is switched off", sink.name, err)
                    self.sinks.remove(sink)
                    try:
                        sink.close()
                    except Exception:
                        pass
            now = time.perf_counter()
            if not repeated:
                self.metrics.stages.add("sinks", now - t0)
            self.metrics.output(frame.capture_stamp, repeated, now)
            self.last = frame

    def close(self) -> list[str]:
        """Close every sink; returns the one-line errors (a recording that could not be saved)."""
        errors = []
        with self._lock:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as err:
                    errors.append(str(err))
            self.sinks = []
        return errors


SEND_FRESH, SEND_REPEAT = "fresh", "repeat"
PHASE_PULL = 0.5  # how far each fresh frame pulls its slot's end toward half a period after it


class SendSlots:
    """When the steady sender sends (pure: times in, decisions out; :class:`SteadySender` runs it).

    Time is cut into slots of ``period`` s and each slot sends exactly one frame, so the sinks get
    ``1/period`` frames a second and a recording keeps the clock: the first fresh frame published in a
    slot goes out at once (:data:`SEND_FRESH`); a slot that ends without one repeats the last frame
    (:data:`SEND_REPEAT`); a fresh frame that comes after its slot has sent waits for the next slot's start.
    The slot grid is phase-locked to the fresh frames: each pulls the grid's phase ``PHASE_PULL`` of the way
    toward putting it mid-slot, so a camera's frames settle there and go out without waiting. (A fixed tick
    made every frame wait for it: a constant 0–1 period per run, set by the phase between the camera and the
    tick — at 25 fps, p95 latency 42 ms in one run and 79 ms in the next for the same work.) The phase stays
    within half a period of the grid fixed at start, so the pulls never add up to a slot gained or lost: over
    any stretch the count of sends is its duration × fps, ±1. When the caller comes back more than a slot late,
    the missed slots are skipped (no burst).
    """

    def __init__(self, period: float, now: float):
        if not period > 0:
            raise ValueError(f"period must be positive, got {period}")
        self.period = float(period)
        self._anchor = float(now)  # slot k ends at anchor + (k + 1) * period + phase
        self._k = 0
        self._phase = 0.0          # within [-period/2, period/2]
        self.used = False          # the current slot has sent its frame

    @property
    def end(self) -> float:
        """The current slot's end (s): the time to ask again, unless a fresh frame comes first."""
        return self._anchor + (self._k + 1) * self.period + self._phase

    def step(self, now: float, fresh: bool) -> str | None:
        """At ``now`` (s), with a fresh frame waiting or not: :data:`SEND_FRESH`, :data:`SEND_REPEAT` or None."""
        if now >= self.end and self.used:  # the slot is over: the one that holds ``now`` (late: skip ahead)
            self._k = max(self._k + 1, math.floor((now - self._anchor - self._phase) / self.period))
            self.used = False
        if self.used:
            return None
        if fresh:
            self.used = True
            half = self.period / 2
            pulled = self._phase + PHASE_PULL * (now + half - self.end)
            self._phase = min(half, max(-half, pulled))
            return SEND_FRESH
        if now >= self.end:
            self.used = True
            return SEND_REPEAT
        return None


class SteadySender:
    """Sends published frames to a :class:`SinkFanout` at a steady ``fps``, each new one without delay.

    Starts with ``first`` (the avatar still). Each 1/fps slot (:class:`SendSlots`) sends the first frame
    published in it at once, or repeats the previous one (counted as a repeat) when none arrived. ``max_frames``:
    stop after that many sends (``done`` is set).
    """

    def __init__(self, fanout: SinkFanout, fps: float, first: OutputFrame, max_frames: int | None = None,
                 clock=time.perf_counter):
        if not fps or fps <= 0:
            raise ValueError(f"--fps must be positive, got {fps}")
        self.fanout, self.period, self.clock = fanout, 1.0 / float(fps), clock
        self.max_frames = max_frames
        self.sent = 0
        self.done = threading.Event()
        self._cond = threading.Condition()
        self._newest = first
        self._fresh = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="splinecam-sender", daemon=True)

    def start(self) -> "SteadySender":
        self._thread.start()
        return self

    def publish(self, frame: OutputFrame) -> None:
        with self._cond:
            self._newest, self._fresh = frame, True
            self._cond.notify()

    def _run(self) -> None:
        slots = SendSlots(self.period, self.clock())
        while not self._stop.is_set():
            with self._cond:
                action = slots.step(self.clock(), self._fresh)
                if action is None:
                    self._cond.wait(max(0.0, slots.end - self.clock()))
                    continue
                frame, self._fresh = self._newest, False
            self.fanout.deliver(frame, repeated=action == SEND_REPEAT)
            self.sent += 1
            if self.max_frames is not None and self.sent >= self.max_frames:
                self.done.set()
                return
        self.done.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
