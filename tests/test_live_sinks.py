"""Sinks: the steady-fps sender, the recorder thread, the virtual camera (missing or fake), fan-out."""

from __future__ import annotations

import time

import numpy as np
import pytest

from splinecam.live.metrics import LiveMetrics
from splinecam.live.sinks import (SEND_FRESH, SEND_REPEAT, OutputFrame, RecorderSink, SendSlots, SinkFanout, SteadySender,
                                  open_virtual_camera)


class ListSink:
    name = "list"

    def __init__(self):
        self.frames, self.times, self.closed = [], [], False

    def send(self, frame):
        self.frames.append(frame)
        self.times.append(time.perf_counter())

    def close(self):
        self.closed = True


def out(value: int, stamp=None, kind="animated") -> OutputFrame:
    return OutputFrame(np.full((4, 6, 3), value, np.uint8), stamp, kind, value)


def test_steady_sender_repeats_the_last_frame_when_inference_is_late():
    sink, metrics = ListSink(), LiveMetrics()
    fanout = SinkFanout([sink], metrics)
    sender = SteadySender(fanout, 50.0, out(0, kind="avatar")).start()
    for i in range(1, 4):                  # a slow "inference": 10 frames/s against 50 sent/s
        time.sleep(0.1)
        sender.publish(out(i, time.perf_counter()))
    time.sleep(0.1)
    sender.stop()
    n = len(sink.frames)
    assert 12 <= n <= 28                                        # ~0.4 s at 50 fps (loose: a busy CI)
    assert sink.frames[0].kind == "avatar"                      # starts on the avatar still
    values = [f.index for f in sink.frames]
    assert values == sorted(values) and set(values) == {0, 1, 2, 3}
    assert metrics.counts["repeated"] == n - 4 and metrics.counts["output"] == n
    assert np.median(np.diff(sink.times)) == pytest.approx(0.02, abs=0.008)
    s = metrics.summary()
    assert s.latency_ms.count == 3                        # only fresh, stamped frames count
    assert s.latency_ms.max < 1000 * 0.1                  # sent at once, not a publish later


def simulate_slots(period: float, publishes: list[float], until: float, start: float = 0.0):
    """Runs :class:`SendSlots` as the sender thread does, on simulated time: it is asked at every publish and
    whenever it said to come back (its ``end``). Returns (sends as (time, kind), waits of the fresh frames
    that were sent: send time - publish time)."""
    slots = SendSlots(period, start)
    pending: float | None = None            # publish time of the newest unsent fresh frame
    sends, waits = [], []
    queue = sorted(publishes)
    now = start
    while now < until:
        while queue and queue[0] <= now:
            pending = queue.pop(0)
        while True:
            action = slots.step(now, pending is not None)
            if action is None:
                break
            sends.append((now, action))
            if action == SEND_FRESH:
                waits.append(now - pending)
                pending = None
        now = min([slots.end] + queue[:1])
    return sends, waits


def test_send_slots_send_a_cameras_frames_without_waiting_whatever_the_phase():
    period = 0.04
    rng = np.random.default_rng(0)
    for phase in np.linspace(0.0, period, 9, endpoint=False):   # a fixed tick made these wait 0-40 ms
        publishes = [phase + 0.5 + i * period + rng.uniform(-0.006, 0.006) for i in range(250)]
        sends, waits = simulate_slots(period, publishes, until=publishes[-1] + 0.001)
        settled = waits[10:]                                  # after the grid has locked on
        assert max(settled) < 1e-9, (phase, max(settled))     # every frame out the moment it is published
        assert [k for t, k in sends if t > publishes[10]].count(SEND_REPEAT) == 0


def test_send_slots_keep_the_rate_when_inference_is_slow_or_bursty():
    period = 0.04
    rng = np.random.default_rng(1)
    for gaps in (rng.uniform(0.05, 0.12, 200), rng.uniform(0.0, 0.08, 400)):  # slow; faster than fps in bursts
        publishes = list(np.cumsum(gaps))
        until = publishes[-1]
        sends, waits = simulate_slots(period, publishes, until=until)
        times = np.array([t for t, _ in sends])
        assert abs(len(sends) - until / period) <= 2                 # one frame per slot: the recording's clock
        per_window = [np.sum((times >= t) & (times < t + 10 * period)) for t in times]
        assert max(per_window) <= 12  # never a burst: 10 periods touch 11 slots, the phase shifts them <= 1 period
        assert max(waits) <= period + 1e-9                           # a fresh frame waits at most one slot


def test_send_slots_skip_ahead_when_the_sender_was_late():
    slots = SendSlots(0.04, 0.0)
    assert slots.step(0.0, True) == SEND_FRESH
    assert slots.step(0.5, False) is None and slots.end == pytest.approx(0.51)  # the slot that holds 0.5
    assert slots.step(0.51, False) == SEND_REPEAT                    # one repeat at its end, not twelve at once


def test_steady_sender_max_frames():
    sink = ListSink()
    sender = SteadySender(SinkFanout([sink], LiveMetrics()), 200.0, out(0), max_frames=7).start()
    assert sender.done.wait(2.0)
    assert len(sink.frames) == 7


def test_recorder_writes_every_frame_in_its_own_thread(tmp_path):
    from splinecam.engines.media import count_frames

    path = tmp_path / "rec.mp4"
    rec = RecorderSink(path, 25.0, (64, 48), block=True)
    for i in range(12):
        rec.send(OutputFrame(np.full((48, 64, 3), i * 20, np.uint8), None, "animated", i))
    rec.close()
    assert path.is_file() and count_frames(path) == 12


def test_live_recorder_drops_instead_of_blocking(monkeypatch, tmp_path):
    class SlowWriter:
        def __init__(self, *a, **k):
            self.frames_written = 0

        def write(self, image):
            time.sleep(0.05)
            self.frames_written += 1

        def close(self):
            pass

    monkeypatch.setattr("splinecam.engines.media.VideoWriter", SlowWriter)
    metrics = LiveMetrics()
    rec = RecorderSink(tmp_path / "x.mp4", 25.0, (6, 4), block=False, max_queue=2, metrics=metrics)
    t0 = time.perf_counter()
    for i in range(20):
        rec.send(out(i))
    assert time.perf_counter() - t0 < 0.5           # never waited for the encoder (blocking: >= 0.9 s)
    rec.close()
    assert rec.dropped > 0 and metrics.counts["recorder_dropped"] == rec.dropped
    assert rec.frames_written == 20 - rec.dropped


def test_missing_virtual_camera_says_one_line_and_carries_on(monkeypatch):
    def no_device(**kw):
        raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found at /dev/video[0-99]. "
                           "Did you run 'modprobe v4l2loopback'?")

    monkeypatch.setattr("sys.platform", "linux")
    said = []
    assert open_virtual_camera((1280, 720), 30, camera_factory=no_device, say=said.append) is None
    assert len(said) == 1 and "\n" not in said[0]
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=splinecam" in said[0]
    assert "carrying on" in said[0]


def test_virtual_camera_gets_rgb_frames_of_the_output_size():
    class FakeCam:
        def __init__(self, width, height, fps, fmt, device):
            self.size, self.sent, self.device, self.closed = (width, height), [], "/dev/video10", False

        def send(self, frame):
            assert frame.shape == (self.size[1], self.size[0], 3) and frame.dtype == np.uint8
            self.sent.append(frame)

        def close(self):
            self.closed = True

    said = []
    sink = open_virtual_camera((6, 4), 30, camera_factory=FakeCam, say=said.append)
    cam = sink.cam
    fanout = SinkFanout([sink], LiveMetrics())
    fanout.deliver(out(5))
    fanout.close()
    assert len(cam.sent) == 1 and cam.closed and "/dev/video10" in said[0]


def test_fanout_switches_off_a_failing_sink_and_keeps_the_others():
    class Broken(ListSink):
        name = "broken"

        def send(self, frame):
            raise OSError("device gone")

    good, bad = ListSink(), Broken()
    fanout = SinkFanout([bad, good], LiveMetrics())
    for i in range(3):
        fanout.deliver(out(i))
    assert len(good.frames) == 3 and bad.closed and fanout.sinks == [good]


def test_metrics_report_the_wait_for_the_loop_beside_the_latency():
    from splinecam.live.metrics import format_summary

    metrics = LiveMetrics()
    for i, (wait, total) in enumerate([(0.001, 0.020), (0.002, 0.025), (0.030, 0.060)]):
        metrics.queued(wait)
        metrics.output(100.0 + i, repeated=False, now=100.0 + i + total)
    s = metrics.summary()
    assert s.queued_ms.count == 3 and s.queued_ms.max == pytest.approx(30.0) and s.queued_ms.p50 == pytest.approx(2.0)
    assert s.to_json()["queued_ms"]["max"] == pytest.approx(30.0)
    assert "waiting for the loop: p95 27 ms" in format_summary(s)
    assert LiveMetrics().summary().queued_ms.count == 0 and "waiting" not in format_summary(LiveMetrics().summary())
