"""The live loop's GPU processor (issue 18): on the TensorRT backend the FrameProcessor runs the networks
through the overlapped two-stream pipeline. On the CPU, with a fake TensorRT (tests/fake_tensorrt.py)
and the recording stream device: the overlapped loop gives exactly the direct loop's frames one call
later — through One-Euro smoothing, calibration, best-frame search, the no-face hold / ease / neutral
fallback, pass-through and avatar switches — with keypoints N+1 enqueued before the host waits on
generator N; and a whole LivePipeline run delivers every frame in order (the last one flushed).

What cannot run here: real CUDA streams and TensorRT kernels (tests/test_tensorrt.py's ``tensorrt``
tests, skipped without a GPU)."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

import fake_tensorrt
from splinecam.engines.faces.tracker import FaceTracker
from splinecam.live.calibration import Match
from splinecam.live.capture import CapturedFrame
from splinecam.live.hotkeys import Action, Command
from splinecam.live.inference import DirectInference, OverlappedInference
from splinecam.live.pipeline import LiveOptions, LivePipeline
from splinecam.live.tracking import FaceCropper
from tests.test_live_pipeline import FakeDetector  # a face where pixel (0, 0) has green 255

SIZE, TPS = 16, 2


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    import splinecam.engines.backends.tensorrt_runner as tr

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    trt = fake_tensorrt.make_fake_tensorrt()
    trt.compute.update(fake_tensorrt.tiny_compute(TPS * 5))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tr, "_LOGGER", None)
    return trt


def tiny_trt_backend():
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.backends.tensorrt_runner import TensorRTGraphs
    from splinecam.engines.cuda_pipeline import RecordingDevice
    from splinecam.engines.tpsmm.config import ModelConfig

    config = ModelConfig(name="tiny", num_tps=TPS, image_size=SIZE, bg=True)
    device = RecordingDevice()
    graphs = TensorRTGraphs.from_plans(config, "fp16", fake_tensorrt.tiny_plans(SIZE, TPS), device)
    return Backend(config, graphs, None, has_bg=True), device


class FakeSearch:
    """Best-frame search stand-in: a match per frame from the keypoints it is given; expires after 0.3 s."""

    def __init__(self):
        self.active, self.best, self.seen = False, None, []

    def start(self, image, t):
        self.active, self.t0, self.best = True, t, None
        return True

    def update(self, crop, kp_raw, t):
        d = float(np.abs(kp_raw).mean())
        self.seen.append(kp_raw.copy())
        if self.best is None or d < self.best[0]:
            self.best = (d, kp_raw.copy())
        return Match(d, self.best[0])

    def expired(self, t):
        return self.active and t - self.t0 >= 0.3

    def finish(self):
        self.active = False
        return None if self.best is None else self.best[1]

    def close(self):
        pass


class FakeVirtualCamera:
    instances: list = []

    def __init__(self, width, height, fps, fmt, device):
        self.frames, self.device, self.closed = [], "/dev/video42", False
        FakeVirtualCamera.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


def camera_frame(i: int, face: bool) -> np.ndarray:
    img = np.empty((240, 320, 3), np.uint8)
    img[:] = (200, 30, 30)
    img[80:160, 120:200] = (120 + 7 * (i % 12), 100 + 5 * (i % 9), 90 + 3 * (i % 7))  # the "face" moves
    img[0, 0, 1] = 255 if face else 0
    return img


class ScriptedCamera:
    """An unpaced file: frames with / without a face by ``face(i)``."""

    def __init__(self, n, face=lambda i: True, fps=25.0):
        self.n, self.face, self.fps, self.live, self.i, self.label = n, face, fps, False, 0, "scripted"

    def read(self):
        if self.i >= self.n:
            return None
        img = camera_frame(self.i, self.face(self.i))
        self.i += 1
        return img

    def reopen(self):
        return False

    def close(self):
        pass


def avatar_dir(tmp_path, n=2):
    d = tmp_path / "avatars"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = ((10, 20, 200), (10, 200, 120))[i]
        img[16:48, 16:48] = (60 + 40 * i, 90, 30)
        cv2.imwrite(str(d / f"a{i}.png"), img[..., ::-1])
    return d


def build(tmp_path, backend, camera, monkeypatch=None, direct=False, **kw):
    FakeVirtualCamera.instances = []
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path)), crop="none", preview=False, output_size=(96, 64), **kw)
    with monkeypatch.context() if direct else _nothing() as m:
        if direct:  # the direct loop on the same (fake TensorRT) backend: what the overlapped one must equal
            m.setattr("splinecam.live.pipeline.inference_for", DirectInference)
        return LivePipeline.build(opts, backend, source=camera, cropper=FaceCropper(FaceTracker(FakeDetector()), SIZE),
                                  camera_factory=FakeVirtualCamera, say=lambda _m: None)


def _nothing():
    import contextlib

    return contextlib.nullcontext()


# frame script (25 fps; hold 0.12 s, ease 0.2 s): face 0-7, none 8-19 (hold 8-10, ease 11-14, neutral
# 15-19), face 20-33; calibrate at 3, search from 5 (0.3 s), next avatar at 17 (no face) and 24 (driving),
# pass-through 26-27, smoothing off from 30
SCRIPT_FACE = lambda i: not 8 <= i < 20  # noqa: E731
HOLD = {"hold_s": 0.12, "ease_s": 0.2}


def drive(proc, n):
    """Feed n scripted frames with hotkeys at fixed frames; returns whatever process() returned."""
    out = []
    for i in range(n):
        t = i / 25.0
        if i == 3:
            proc.handle(Command(Action.CALIBRATE), t)
        if i == 5:
            proc.handle(Command(Action.FIND_BEST), t)         # search on, expires 0.3 s later
        if i in (17, 24):
            proc.handle(Command(Action.NEXT_AVATAR), t)        # while no face, and while driving
        if i in (26, 28):
            proc.handle(Command(Action.PASSTHROUGH), t)
        if i == 30:
            proc.handle(Command(Action.SMOOTHING), t)
        out.append(proc.process(CapturedFrame(camera_frame(i, SCRIPT_FACE(i)), 1000.0 + t, i, t)))
    return out


def same(a, b):
    assert a.output.index == b.output.index and a.output.kind == b.output.kind and a.status == b.status
    assert a.output.capture_stamp == b.output.capture_stamp == 1000.0 + a.output.index / 25.0
    np.testing.assert_array_equal(a.output.image, b.output.image)
    for x, y in ((a.kp_raw, b.kp_raw), (a.crop, b.crop)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert (a.match is None) == (b.match is None)
    if a.match is not None:
        assert (a.match.distance, a.match.best) == (b.match.distance, b.match.best)


def test_the_trt_backend_gets_the_overlapped_processor(tmp_path):
    backend, _ = tiny_trt_backend()
    pipe = build(tmp_path, backend, ScriptedCamera(1))
    assert isinstance(pipe.processor.inference, OverlappedInference)
    pipe.processor.close()
    from splinecam.live.passthrough import PassThroughBackend

    pipe = build(tmp_path, PassThroughBackend(size=SIZE), ScriptedCamera(1))
    assert isinstance(pipe.processor.inference, DirectInference)      # every other backend: direct
    pipe.processor.close()


def test_overlapped_processor_gives_the_direct_frames_one_call_later(tmp_path, monkeypatch):
    n = 34
    direct_backend, _ = tiny_trt_backend()
    direct = build(tmp_path / "d", direct_backend, ScriptedCamera(1), monkeypatch, direct=True, **HOLD).processor
    assert isinstance(direct.inference, DirectInference)
    gpu_backend, device = tiny_trt_backend()
    gpu = build(tmp_path / "g", gpu_backend, ScriptedCamera(1), **HOLD).processor
    direct.search, gpu.search = FakeSearch(), FakeSearch()
    want = drive(direct, n)
    got = drive(gpu, n)
    assert got[0] is None and all(p is not None for p in want)
    got = got[1:] + [gpu.flush()]
    assert gpu.flush() is None
    for a, b in zip(got, want):
        same(a, b)
    kinds = [p.output.kind for p in want]
    assert kinds[:8] == ["animated"] * 8 and set(kinds[8:20]) == {"avatar"} and kinds[26:28] == ["passthrough"] * 2
    assert kinds[20:26] == kinds[28:] == ["animated"] * 6
    statuses = {p.status for p in want[8:20]}
    assert {"no face: holding the last pose", "no face: easing to rest", "no face in view: showing the avatar"} <= statuses
    assert any(p.match is not None for p in want)                     # the search ran, on the same keypoints
    assert len(gpu.search.seen) == len(direct.search.seen) > 0
    assert gpu.normaliser.calibration is not None
    np.testing.assert_array_equal(gpu.normaliser.calibration.kp_driving_ref, direct.normaliser.calibration.kp_driving_ref)
    # the frames really went through the two streams: keypoints N+1 before the host waits on generator N
    log = device.log
    for i in range(1, 8):
        kp_next = log.index(("launch", "kp", f"kp[{i}]"))
        wait_prev = log.index(("host_wait", f"gen_done/{(i - 1) % 2}", f"gen[{i - 1}]"))
        assert kp_next < wait_prev
    pose_gens = [e for e in log if e[:2] == ("launch", "gen")]
    assert len(pose_gens) == sum(p.output.kind in ("animated",) for p in want) + \
        sum(p.status in ("no face: holding the last pose", "no face: easing to rest") for p in want)
    direct.close()
    gpu.close()
    assert gpu.inference.pipeline.closed


def test_a_whole_live_run_on_the_overlapped_processor_delivers_every_frame(tmp_path, monkeypatch):
    n = 12
    face = lambda i: i not in (5, 6)  # noqa: E731
    gpu_backend, _ = tiny_trt_backend()
    pipe = build(tmp_path / "g", gpu_backend, ScriptedCamera(n, face))
    assert isinstance(pipe.processor.inference, OverlappedInference)
    summary = pipe.run()
    got = FakeVirtualCamera.instances[0].frames
    direct_backend, _ = tiny_trt_backend()
    pipe_d = build(tmp_path / "d", direct_backend, ScriptedCamera(n, face), monkeypatch, direct=True)
    summary_d = pipe_d.run()
    want = FakeVirtualCamera.instances[0].frames
    assert len(got) == len(want) == n                                # the last frame was flushed, none lost
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert summary.frames["processed"] == summary_d.frames["processed"] == n
    assert "gpu_wait" in summary.stages_ms and "gpu_wait" not in summary_d.stages_ms
    assert pipe.processor.inference.pipeline.closed                  # closed with the run
