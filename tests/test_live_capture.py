"""Capture: newest-frame-wins, timestamps, file pacing (unpaced vs --realtime), loop, reconnect,
camera specs and listing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from splinecam.engines.errors import MediaError
from splinecam.live.capture import (CameraError, CameraInfo, CaptureThread, CapturedFrame, FrameSlot, Pacing, list_cameras,
                          open_source, parse_source)


class FakeSource:
    """``n`` frames (None = endless) whose pixel value is their number; ``period`` s per read
    (a camera's frame interval); ``gap``: reads (by number) that fail, as if unplugged."""

    def __init__(self, n=None, live=True, fps=None, period=0.0, gap=(), reopen_fails=0):
        self.n, self.live, self.fps, self.period = n, live, fps, period
        self.label = "fake"
        self.i = 0
        self.reads = 0
        self.gap = set(gap)
        self.reopen_fails = reopen_fails
        self.reopens = 0

    def read(self):
        if self.period:
            time.sleep(self.period)
        self.reads += 1
        if self.reads in self.gap:
            return None
        if self.n is not None and self.i >= self.n:
            return None
        img = np.full((8, 8, 3), self.i % 256, np.uint8)
        self.i += 1
        return img

    def reopen(self):
        self.reopens += 1
        if self.reopens <= self.reopen_fails:
            return False
        if not self.live:
            self.i = 0
        return True

    def close(self):
        pass


def drain(cap: CaptureThread, delay: float = 0.0, limit: int = 10_000) -> list[CapturedFrame]:
    got = []
    while len(got) < limit:
        f = cap.get(timeout=1.0)
        if f is None:
            if cap.ended:
                break
            continue
        got.append(f)
        if delay:
            time.sleep(delay)
    return got


def frame(i: int) -> CapturedFrame:
    return CapturedFrame(np.zeros((2, 2, 3), np.uint8), float(i), i, float(i))


def test_slot_newest_frame_wins():
    slot = FrameSlot()
    assert slot.put(frame(0)) is False
    assert slot.put(frame(1)) is True      # frame 0 was never taken: dropped
    assert slot.put(frame(2)) is True
    assert slot.get(0.01).index == 2
    assert slot.get(0.01) is None          # nothing new


def test_camera_newest_frame_wins_and_stamps():
    src = FakeSource(n=None, live=True, period=0.004)
    cap = CaptureThread(src, Pacing.for_source(src)).start()
    got = []
    t_end = time.perf_counter() + 0.4
    while time.perf_counter() < t_end:
        f = cap.get(timeout=0.5)
        if f is not None:
            assert f.timestamp <= time.perf_counter()
            got.append(f)
            time.sleep(0.03)               # a slow consumer
    cap.stop()
    idx = [f.index for f in got]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    assert cap.dropped > 0 and cap.captured >= len(got) + cap.dropped - 1
    assert max(np.diff(idx)) > 1           # frames were skipped: the consumer always got the newest
    stamps = [f.timestamp for f in got]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    # a frame taken is at most one camera period old when taken (newest wins), far less than the consumer's 30 ms
    assert all(f.media_time == f.timestamp for f in got)


def test_file_unpaced_every_frame_in_order():
    src = FakeSource(n=25, live=False, fps=25.0)
    cap = CaptureThread(src, Pacing.for_source(src, realtime=False)).start()
    got = drain(cap, delay=0.002)
    assert [f.index for f in got] == list(range(25))
    assert [int(f.image[0, 0, 0]) for f in got] == list(range(25))
    assert cap.dropped == 0 and cap.ended
    assert got[-1].media_time == pytest.approx(24 / 25.0)    # the file's own clock


def test_file_realtime_is_paced_unpaced_is_not():
    n, fps = 20, 50.0
    src = FakeSource(n=n, live=False, fps=fps)
    t0 = time.perf_counter()
    got = drain(CaptureThread(src, Pacing.for_source(src, realtime=False)).start())
    unpaced = time.perf_counter() - t0
    assert len(got) == n
    src = FakeSource(n=n, live=False, fps=fps)
    cap = CaptureThread(src, Pacing.for_source(src, realtime=True)).start()
    t0 = time.perf_counter()
    got = drain(cap)
    paced = time.perf_counter() - t0
    assert paced >= (n - 1) / fps * 0.9           # ~0.38 s: played at its own rate
    assert unpaced < paced / 2
    stamps = np.array([f.timestamp for f in got])
    assert np.median(np.diff(stamps)) == pytest.approx(1 / fps, rel=0.5)


def test_realtime_file_drops_for_a_slow_consumer():
    src = FakeSource(n=30, live=False, fps=100.0)
    cap = CaptureThread(src, Pacing.for_source(src, realtime=True)).start()
    got = drain(cap, delay=0.05)
    assert cap.dropped > 0 and len(got) < 30 and got[-1].index >= 25


def test_loop_repeats_the_file_with_a_running_clock():
    src = FakeSource(n=5, live=False, fps=10.0)
    cap = CaptureThread(src, Pacing.for_source(src, loop=True)).start()
    got = drain(cap, limit=12)
    cap.stop()
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    t = [f.media_time for f in got]
    assert all(b > a for a, b in zip(t, t[1:]))


def test_camera_unplugged_and_back_resumes():
    src = FakeSource(n=None, live=True, period=0.002, gap=range(10, 16), reopen_fails=2)
    cap = CaptureThread(src, Pacing.for_source(src), reconnect_s=0.01).start()
    got = []
    t_end = time.perf_counter() + 3.0
    while len(got) < 30 and time.perf_counter() < t_end:
        f = cap.get(timeout=0.2)
        if f is not None:
            got.append(f)
    cap.stop()
    assert len(got) == 30 and cap.reconnects >= 1 and src.reopens >= 3


def test_parse_source(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    cams = [CameraInfo(0, "Integrated Webcam", "/dev/video0"), CameraInfo(2, "Logitech C920", "/dev/video2")]
    assert parse_source("0", cams).target == 0 and parse_source("0", cams).kind == "camera"
    assert parse_source("/dev/video2", cams).target == 2
    assert parse_source("logitech", cams).target == 2
    assert parse_source(str(clip), cams).kind == "file"
    assert parse_source("rtsp://host/stream", cams).kind == "url"
    with pytest.raises(MediaError, match="no such video file"):
        parse_source(str(tmp_path / "missing.mp4"), cams)
    with pytest.raises(CameraError, match="no camera of that name") as err:
        parse_source("facetime", cams)
    assert "\n" not in str(err.value)


def test_list_cameras_from_sysfs(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    for node, name, index in (("video0", "Integrated Webcam", "0"), ("video1", "Integrated Webcam", "1"),
                              ("video10", "splinecam", "0")):
        (tmp_path / node).mkdir()
        (tmp_path / node / "name").write_text(name + "\n")
        (tmp_path / node / "index").write_text(index + "\n")
    cams = list_cameras(tmp_path)
    assert [(c.index, c.name, c.path) for c in cams] == [(0, "Integrated Webcam", "/dev/video0"),
                                                         (10, "splinecam", "/dev/video10")]


def test_missing_camera_is_one_clear_error():
    with pytest.raises(CameraError) as err:
        open_source("47")
    msg = str(err.value)
    assert "no such camera" in msg and "splinecam cameras" in msg and "\n" not in msg


def test_video_file_source(shared):
    src = open_source(str(shared / "data" / "clips" / "webcam" / "lp-d12.mp4"))
    assert not src.live and src.fps == 25.0 and src.size == (512, 512)
    cap = CaptureThread(src, Pacing.for_source(src)).start()
    f = cap.get(timeout=5)
    cap.stop()
    assert f.image.shape == (512, 512, 3) and f.image.dtype == np.uint8 and f.index == 0
