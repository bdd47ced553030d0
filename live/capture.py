"""Capture: cameras (by index, name or device path), video files and stream URLs, read in a thread.

    source = open_source("0" | "Logitech" | "/dev/video2" | "clip.mp4" | "rtsp://…",
                         size=(1280, 720), fps=30)            # raises CameraError / MediaError
    capture = CaptureThread(source, pacing=Pacing.for_source(source, realtime, loop))
    capture.start()
    frame = capture.get(timeout=1.0)   # CapturedFrame | None; None + capture.ended: no more frames

Every frame is stamped with ``time.perf_counter()`` the moment it is read, so end-to-end latency
(capture → sink) is measured. Pacing:

- a camera or stream (``live``): frames arrive at the device's rate; the newest frame wins — one
  the processing did not take before the next arrived is dropped (counted), so latency never
  builds up;
- a file, unpaced (default): every frame is handed over, in order, as fast as the processing takes
  them (the next frame is read when the processing asks for it: nothing is dropped, nothing read
  ahead);
- a file with ``realtime``: read at its own fps, newest frame wins, like a camera;
- ``loop``: a file starts again at its end (the source clock keeps running).

A camera that stops delivering (unplugged) is closed and reopened every ``reconnect_s`` until it
comes back; the pipeline holds the avatar meanwhile (``capture.status``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from splinecam.engines.backends.base import StageTimer
from splinecam.engines.errors import MediaError
from splinecam.live.kinds import StrEnum

log = logging.getLogger(__name__)

SYSFS_V4L = Path("/sys/class/video4linux")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".gif", ".flv", ".wmv")


class CameraError(MediaError):
    """A camera that does not exist or cannot be opened."""


# ----------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class CapturedFrame:
    """One frame as read from the source.

    image: (H, W, 3) uint8 RGB. timestamp: ``time.perf_counter()`` when it was read (s).
    index: 0-based count of frames read from the source (keeps counting across loops and
    reconnects). media_time: the source's own clock (s): the capture time for a camera or stream,
    ``index / fps`` for a file — smoothing and pose easing run on it, so an unpaced file is
    filtered as if it played in real time.
    """

    image: np.ndarray
    timestamp: float
    index: int
    media_time: float


# ----------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class CameraInfo:
    """A camera the OS knows: ``index`` for OpenCV, ``name`` (from sysfs on Linux), ``path``."""

    index: int
    name: str
    path: str


def list_cameras(sysfs: Path = SYSFS_V4L) -> list[CameraInfo]:
    """The cameras of this machine, by index.

    Linux: the ``/dev/video*`` capture nodes with their names from
    ``/sys/class/video4linux/*/name`` (a webcam's extra metadata node, ``index`` ≠ 0, is left
    out). Elsewhere OpenCV cannot name cameras: indices 0-5 that open are listed as "camera N".
    """
    if sys.platform.startswith("linux"):
        cams = []
        for node in sorted(sysfs.glob("video*"), key=lambda p: _natural_key(p.name)):
            m = re.fullmatch(r"video(\d+)", node.name)
            if not m:
                continue
            if _read_text(node / "index") not in ("", "0"):
                continue
            name = _read_text(node / "name") or node.name
            cams.append(CameraInfo(int(m[1]), name, f"/dev/{node.name}"))
        return cams
    cams = []
    for i in range(6):  # pragma: no cover - not Linux
        cap = cv2.VideoCapture(i, _camera_api())
        if cap.isOpened():
            cams.append(CameraInfo(i, f"camera {i}", str(i)))
        cap.release()
    return cams


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _camera_api() -> int:
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform == "win32":  # pragma: no cover
        return cv2.CAP_DSHOW
    if sys.platform == "darwin":  # pragma: no cover
        return cv2.CAP_AVFOUNDATION
    return cv2.CAP_ANY  # pragma: no cover


# ----------------------------------------------------------------------------- source specs


@dataclass(frozen=True)
class SourceSpec:
    """What ``--camera`` named. kind: "camera" (target: index), "file" (path) or "url"."""

    kind: str
    target: int | str
    label: str

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "url")


def parse_source(spec: str | int | None, cameras: list[CameraInfo] | None = None) -> SourceSpec:
    """Resolve ``--camera``: an index ("0"), a device path ("/dev/video2"), a name or part of one
    ("logitech", case-insensitive), a video file, or a URL (``scheme://…``). Raises
    :class:`CameraError` / :class:`MediaError` with one line when it names nothing."""
    if spec is None or spec == "":
        spec = "0"
    text = str(spec).strip()
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text), f"camera {text}")
    if "://" in text:
        return SourceSpec("url", text, text)
    m = re.fullmatch(r"/dev/video(\d+)", text)
    if m:
        return SourceSpec("camera", int(m[1]), text)
    path = Path(text).expanduser()
    if path.is_file():
        return SourceSpec("file", str(path), path.name)
    if path.suffix.lower() in VIDEO_EXTENSIONS or os.sep in text:
        raise MediaError(f"--camera {text}: no such video file (check the path)")
    cameras = list_cameras() if cameras is None else cameras
    matches = [c for c in cameras if text.lower() in c.name.lower()]
    if len(matches) >= 1:
        c = matches[0]
        return SourceSpec("camera", c.index, f"camera {c.index} ({c.name})")
    known = ", ".join(f"{c.index}: {c.name}" for c in cameras) or "none found"
    raise CameraError(f"--camera {text!r}: no camera of that name (cameras: {known}); "
                      f"see `splinecam cameras`")


# ----------------------------------------------------------------------------- sources


class FrameSource(Protocol):
    """Where frames come from. ``read()`` returns (H, W, 3) uint8 RGB, or None at the end of a
    file or when a camera stops delivering; ``reopen()`` starts a file again / reconnects a
    camera (False when that failed)."""

    label: str
    live: bool
    fps: float | None

    def read(self) -> np.ndarray | None: ...

    def reopen(self) -> bool: ...

    def close(self) -> None: ...


class OpenCVSource:
    """A camera, file or stream through ``cv2.VideoCapture``.

    Cameras: MJPG requested (most webcams only reach 30 fps at 720p in MJPG), then ``size``
    (width, height) and ``fps``; what the driver granted is in ``size`` / ``fps`` / ``fourcc``
    afterwards, and in :meth:`describe`. The driver's buffer is set to one frame.
    """

    def __init__(self, spec: SourceSpec, size: tuple[int, int] | None = None, fps: float | None = None):
        self.spec = spec
        self.label = spec.label
        self.live = spec.live
        self.requested_size = size
        self.requested_fps = fps
        self.size: tuple[int, int] | None = None
        self.fps: float | None = None
        self.fourcc = ""
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._open(first=True)

    def _open(self, first: bool = False) -> bool:
        spec = self.spec
        if spec.kind == "camera":
            if sys.platform.startswith("linux") and not Path(f"/dev/video{spec.target}").exists():
                if first:
                    raise CameraError(_missing_camera_message(spec))
                return False
            cap = cv2.VideoCapture(int(spec.target), _camera_api())
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
                if self.requested_size:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.requested_size[0])
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.requested_size[1])
                if self.requested_fps:
                    cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            cap = cv2.VideoCapture(str(spec.target))
        if not cap.isOpened():
            cap.release()
            if first:
                if spec.kind == "camera":
                    raise CameraError(f"{spec.label} could not be opened: is another program using it? "
                                      f"(see `splinecam cameras`)")
                raise MediaError(f"--camera {spec.target}: cannot open it as a video "
                                 f"(use an MP4, MOV, MKV, AVI or WebM file, or a stream URL)")
            return False
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            if first:
                what = "delivers no frames" if spec.kind == "camera" else "has no frame OpenCV can decode"
                raise (CameraError if spec.kind == "camera" else MediaError)(
                    f"--camera {spec.target}: {spec.label} {what}")
            return False
        self._cap = cap
        self._first = frame
        self.size = (frame.shape[1], frame.shape[0])
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None
        code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
        self.fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if code else ""
        return True

    def describe(self) -> str:
        w, h = self.size or (0, 0)
        extra = f" {self.fourcc}" if self.spec.kind == "camera" and self.fourcc else ""
        fps = f" {self.fps:g} fps" if self.fps else ""
        return f"{self.label}: {w}x{h}{extra}{fps}"

    def read(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
        elif self._cap is None:
            return None
        else:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def reopen(self) -> bool:
        self.close()
        return self._open()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._first = None


def _missing_camera_message(spec: SourceSpec) -> str:
    cams = list_cameras()
    known = ", ".join(f"{c.index}: {c.name}" for c in cams)
    where = f"cameras here: {known}" if cams else "this machine has no camera (/dev/video* is empty)"
    return (f"--camera {spec.target}: no such camera ({where}); see `splinecam cameras`, "
            f"or pass a video file / stream URL with --camera")


def open_source(spec: str | int | None, size: tuple[int, int] | None = None,
                fps: float | None = None) -> OpenCVSource:
    """Parse ``--camera`` and open it (the first frame is read, so a dead source fails here)."""
    return OpenCVSource(parse_source(spec), size, fps)


# ----------------------------------------------------------------------------- hand-over


class FrameSlot:
    """A one-frame hand-over between the capture thread and the processing.

    ``put(frame, wait=False)``: the newest frame wins — an unread frame is replaced (returns True:
    one frame dropped). ``put(frame, wait=True)``: waits until the previous one was taken (no
    drops; returns False, or None if ``close()`` was called meanwhile). ``get(timeout)``: the
    frame not yet taken, or None after ``timeout`` s / when closed and empty; on an empty slot it
    also raises the request flag a demand-driven reader waits for (``wait_request``).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: CapturedFrame | None = None
        self._closed = False
        self._requested = False

    def put(self, frame: CapturedFrame, wait: bool = False) -> bool | None:
        with self._cond:
            if wait:
                while self._frame is not None and not self._closed:
                    self._cond.wait(0.1)
                if self._closed:
                    return None
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify_all()
            return dropped

    def wait_request(self) -> bool:
        """Wait until a consumer asks for a frame (``get`` on an empty slot); False if closed."""
        with self._cond:
            while not (self._requested and self._frame is None) and not self._closed:
                self._cond.wait(0.1)
            self._requested = False
            return not self._closed

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        with self._cond:
            if self._frame is None and not self._closed:
                self._requested = True
                self._cond.notify_all()
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


@dataclass(frozen=True)
class Pacing:
    """How frames are handed over. newest_wins: drop frames the processing did not take (cameras,
    ``--realtime``); fps: pace reading at this rate (None: as fast as the source gives them);
    loop: start a file again at its end; reconnect: reopen a live source that stops."""

    newest_wins: bool
    fps: float | None = None
    loop: bool = False
    reconnect: bool = False

    @classmethod
    def for_source(cls, source: FrameSource, realtime: bool = False, loop: bool = False) -> "Pacing":
        if source.live:
            return cls(newest_wins=True, fps=None, loop=False, reconnect=True)
        if realtime:
            return cls(newest_wins=True, fps=source.fps or 25.0, loop=loop)
        return cls(newest_wins=False, fps=None, loop=loop)


class CaptureStatus(StrEnum):
    """``CaptureThread.status`` (written by the capture thread; read by the processing thread — one
    reference assignment, so a reader sees the old or the new member, never a mix)."""

    RUNNING = "running"
    RECONNECTING = "reconnecting"  # a live source stopped; reopened every ``reconnect_s``
    ENDED = "ended"                # end of a file without loop, or stopped


class CaptureThread:
    """Reads ``source`` in a daemon thread and hands frames over through a :class:`FrameSlot`.

    Counters: ``captured`` (frames read), ``dropped`` (replaced before the processing took them).
    ``timer`` holds the "capture" stage (read + colour conversion, ms). ``status``: a
    :class:`CaptureStatus`. ``ended`` is True once nothing more will come.
    """

    def __init__(self, source: FrameSource, pacing: Pacing, reconnect_s: float = 1.0,
                 clock=time.perf_counter):
        self.source = source
        self.pacing = pacing
        self.reconnect_s = reconnect_s
        self.clock = clock
        self.slot = FrameSlot()
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.status = CaptureStatus.RUNNING
        self.timer = StageTimer()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="splinecam-capture", daemon=True)
        self._fps = source.fps or 25.0

    def start(self) -> "CaptureThread":
        self._thread.start()
        return self

    @property
    def ended(self) -> bool:
        return self._done.is_set()

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """The next frame to process (see :class:`FrameSlot`); None on timeout or at the end."""
        return self.slot.get(timeout)

    def _run(self) -> None:
        t_start = self.clock()
        try:
            while not self._stop.is_set():
                if self.pacing.fps:  # pace a file: frame i is due at start + i / fps
                    due = t_start + self.captured / self.pacing.fps
                    delay = due - self.clock()
                    if delay > 0 and self._stop.wait(delay):
                        break
                if not self.pacing.newest_wins and not self.slot.wait_request():
                    break  # unpaced: read a frame only when the processing asks for one (no read-ahead:
                    #        the capture stamp is when the processing could start on it)
                t0 = self.clock()
                image = self.source.read()
                if image is None:
                    if not self._recover():
                        break
                    if self.pacing.fps and not self.source.live:
                        t_start = self.clock() - self.captured / self.pacing.fps
                    continue
                now = self.clock()
                self.timer.add("capture", now - t0)
                media_time = now if self.source.live else self.captured / self._fps
                frame = CapturedFrame(image, now, self.captured, media_time)
                self.captured += 1
                dropped = self.slot.put(frame, wait=not self.pacing.newest_wins)
                if dropped is None:
                    break
                self.dropped += int(dropped)
        except Exception:  # never die silently: the pipeline sees "ended" and reports it
            log.exception("capture thread failed")
        finally:
            self.status = CaptureStatus.ENDED
            self._done.set()
            self.slot.close()

    def _recover(self) -> bool:
        """End of a file / a camera stopped: loop, reconnect, or end (False)."""
        if not self.source.live:
            if self.pacing.loop and self.captured > 0 and self.source.reopen():
                return True
            return False
        if not self.pacing.reconnect:
            return False
        self.status = CaptureStatus.RECONNECTING
        log.warning("%s stopped delivering frames: reconnecting", self.source.label)
        while not self._stop.is_set():
            if self.source.reopen():
                self.reconnects += 1
                self.status = CaptureStatus.RUNNING
                log.warning("%s is back", self.source.label)
                return True
            self._stop.wait(self.reconnect_s)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self.slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.source.close()
