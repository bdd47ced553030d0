"""One-Euro smoothing of the driving keypoints, and the pose fallback without a face."""

from __future__ import annotations

import numpy as np
import pytest

from splinecam.engines.one_euro import OneEuroFilter
from splinecam.live.smoothing import SmoothingSettings
from splinecam.live.tracking import PoseFallback

FPS = 25.0


def run(f: OneEuroFilter, xs: np.ndarray) -> np.ndarray:
    return np.stack([f(x, i / FPS) for i, x in enumerate(xs)])


def test_constant_passes_through_and_first_value_is_exact():
    kp = np.random.default_rng(0).uniform(-1, 1, (50, 2)).astype(np.float32)
    out = run(OneEuroFilter(), np.repeat(kp[None], 20, 0))
    assert out.dtype == np.float32 and out.shape == (20, 50, 2)
    np.testing.assert_allclose(out, np.repeat(kp[None], 20, 0), atol=1e-6)


def test_jitter_is_reduced():
    rng = np.random.default_rng(1)
    kp = rng.uniform(-0.5, 0.5, (50, 2)).astype(np.float32)
    noisy = kp + rng.normal(0, 0.01, (200, 50, 2)).astype(np.float32)
    out = run(OneEuroFilter(min_cutoff=1.0, beta=4.0), noisy)
    assert np.std(out[50:] - kp) < 0.5 * np.std(noisy[50:] - kp)   # ~0.4 at 1 Hz, 25 fps


def test_beta_cuts_lag_on_fast_motion():
    t = np.arange(50) / FPS
    ramp = np.stack([np.stack([t * 1.5, -t], -1)] * 5, 1).astype(np.float32)  # (50, 5, 2), 1.5 units/s
    lag_still = np.abs(run(OneEuroFilter(1.0, 0.0), ramp)[-1] - ramp[-1]).mean()
    lag_fast = np.abs(run(OneEuroFilter(1.0, 8.0), ramp)[-1] - ramp[-1]).mean()
    assert lag_fast < 0.5 * lag_still


def test_reset_and_bad_timestamps():
    f = OneEuroFilter()
    f(np.zeros(3), 1.0)
    out = f(np.ones(3), 1.0)              # same stamp: treated as 1/30 s later, no division by zero
    assert np.all(np.isfinite(out)) and np.all((out > 0) & (out < 1))
    f.reset()
    np.testing.assert_array_equal(f(np.full(3, 5.0), 2.0), np.full(3, 5.0, np.float32))
    with pytest.raises(ValueError):
        SmoothingSettings(min_cutoff=0)


def test_pose_fallback_holds_then_eases_to_neutral():
    neutral = np.zeros((50, 2), np.float32)
    last = np.full((50, 2), 0.4, np.float32)
    fb = PoseFallback(hold_s=0.25, ease_s=0.5)
    assert fb.pose(neutral, 0.0).phase == "neutral"          # never saw a face: the avatar at rest
    fb.good(last, 10.0)
    p = fb.pose(neutral, 10.1)
    assert p.phase == "hold" and np.array_equal(p.kp, last)
    mids = [fb.pose(neutral, 10.25 + s).kp[0, 0] for s in (0.1, 0.25, 0.4)]
    assert fb.pose(neutral, 10.5).phase == "easing"
    assert 0.4 > mids[0] > mids[1] > mids[2] > 0.0           # monotone towards neutral
    end = fb.pose(neutral, 10.8)
    assert end.phase == "neutral" and np.array_equal(end.kp, neutral)
    fb.reset()
    assert fb.pose(neutral, 10.3).phase == "neutral"


def test_one_filter_for_keypoints_and_the_face_tracker():
    """engines/one_euro.OneEuroFilter is the only One-Euro filter: the live keypoints' (float32) and the
    face tracker's crop (float64, a per-element cut-off: the side smoothed harder than the centre)."""
    from splinecam.engines.faces.tracker import FaceTracker

    tracker = FaceTracker(detector=object())
    f = tracker._new_filter()
    assert type(f) is OneEuroFilter and f.dtype == np.float64
    x0 = np.array([100.0, 80.0, 200.0])
    f(x0, 0.0)
    out = f(x0 + 10.0, 1 / 30)
    assert out.dtype == np.float64
    moved = (out - x0) / 10.0
    assert moved[2] < moved[0] == pytest.approx(moved[1])  # half the cut-off on the side: it lags more
    assert OneEuroFilter.from_settings(SmoothingSettings())(np.zeros(2), 0.0).dtype == np.float32
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)


def test_native_stderr_silenced_overlapping_threads_restore_fd2(tmp_path):
    """Two overlapping start-ups share one redirection; fd 2 comes back to where it pointed, whatever the
    order they leave in (a second dup of /dev/null must never be 'restored')."""
    import os
    import threading

    from splinecam.engines.faces.graphs import native_stderr_silenced

    log = tmp_path / "fd2.txt"
    saved = os.dup(2)
    try:
        with open(log, "w") as f:
            os.dup2(f.fileno(), 2)
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def a():
            with native_stderr_silenced():
                a_in.set()
                b_in.wait(5)
                os.write(2, b"lost-a\n")
            a_out.set()

        def b():
            a_in.wait(5)
            with native_stderr_silenced():
                b_in.set()
                a_out.wait(5)
                os.write(2, b"lost-b\n")

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        os.write(2, b"kept\n")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert log.read_text() == "kept\n"


def test_quiet_graph_start_up_chatter_is_silenced_until_the_graph_has_run_once(tmp_path):
    """mediapipe prints while its calculators open, on its own threads, after construction returns: the
    silenced window spans construction AND a warm-up inference on a blank frame (which waits until the
    graph is idle), so chatter printed late in start-up is silenced too; later calls print as they do."""
    import os
    import threading

    from splinecam.engines.faces.graphs import QuietGraph

    class LateOpeningGraph:
        """Opens its 'calculators' on another thread, printing, only once the first frame is in."""

        def __init__(self):
            self.frames = []
            self._opener = None

        def process(self, image):
            if self._opener is None:
                self._opener = threading.Thread(target=lambda: os.write(2, b"INFO: Created delegate\n"))
                self._opener.start()
                self._opener.join()  # mediapipe's process() waits until the graph is idle
            self.frames.append(image.shape)
            os.write(2, b"frame\n")
            return len(self.frames)

    log = tmp_path / "fd2.txt"
    saved = os.dup(2)
    try:
        with open(log, "w") as f:
            os.dup2(f.fileno(), 2)
        graph = QuietGraph(LateOpeningGraph)
        assert graph.process(np.zeros((10, 12, 3), np.uint8)) == 2
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert log.read_text() == "frame\n"                  # the warm-up's output and the opener's: silenced
    assert graph._graph.frames[0] == (64, 64, 3)          # the blank warm-up frame
