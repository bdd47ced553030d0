"""The live loop with fakes (camera, face detector, backend, virtual camera): privacy, avatar
cache, hotkeys, metrics, remembered state, clear errors, Ctrl-C; and one headless end-to-end run
with the golden-small checkpoint."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from splinecam.engines.faces.geometry import FaceBox
from splinecam.engines.faces.tracker import FaceTracker
from splinecam.live.hotkeys import Action, Command, command_for_key
from splinecam.live.passthrough import PassThroughBackend
from splinecam.live.pipeline import LiveOptions, LivePipeline
from splinecam.live.tracking import FaceCropper

CAMERA_RGB = (230, 20, 20)   # the "real you": red
AVATAR_RGB = [(10, 20, 200), (10, 120, 200), (10, 200, 120)]


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


class FakeDetector:
    """A face at the centre of frames whose pixel (0, 0) has green 255."""

    def detect(self, image):
        if image[0, 0, 1] != 255:
            return []
        h, w = image.shape[:2]
        return [FaceBox(w / 2 - 40, h / 2 - 40, w / 2 + 40, h / 2 + 40, 0.9)]


class FakeCamera:
    """Red frames; ``face(i)`` says whether frame i shows a face. live: a camera (newest wins)."""

    def __init__(self, n=None, face=lambda i: True, live=True, fps=None, period=0.004):
        self.n, self.face, self.live, self.fps, self.period = n, face, live, fps, period
        self.label, self.i = "fake camera", 0

    def read(self):
        if self.n is not None and self.i >= self.n:
            return None
        if self.live:
            time.sleep(self.period)
        img = np.empty((240, 320, 3), np.uint8)
        img[:] = CAMERA_RGB
        img[100:140, 140:180] = (250, 200, 180)   # something face-coloured in the middle
        img[0, 0, 1] = 255 if self.face(self.i) else 0
        self.i += 1
        return img

    def reopen(self):
        return False

    def close(self):
        pass


class FakeVirtualCamera:
    """Stands in for pyvirtualcam.Camera and keeps what the meeting would see."""

    instances: list = []

    def __init__(self, width, height, fps, fmt, device):
        self.size, self.frames, self.device, self.closed = (width, height), [], "/dev/video42", False
        FakeVirtualCamera.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


def avatar_dir(tmp_path, n=1):
    d = tmp_path / "avatars"
    d.mkdir(exist_ok=True)
    for i in range(n):
        img = np.zeros((300, 300, 3), np.uint8)
        img[:] = AVATAR_RGB[i]
        cv2.imwrite(str(d / f"a{i}.png"), img[..., ::-1])
    return d


def build(tmp_path, camera, backend=None, n_avatars=1, say=None, **kw):
    backend = backend or PassThroughBackend()
    FakeVirtualCamera.instances = []
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path, n_avatars)), crop="none", preview=False,
                       output_size=(320, 180), **kw)
    cropper = FaceCropper(FaceTracker(FakeDetector()), backend.size)
    said = say if say is not None else []
    pipe = LivePipeline.build(opts, backend, source=camera, cropper=cropper, camera_factory=FakeVirtualCamera,
                              say=said.append)
    return pipe, backend, said


def is_camera(frame: np.ndarray) -> bool:
    """Any pixel that could only come from the camera (red)."""
    return bool(((frame[..., 0] > 150) & (frame[..., 2] < 80)).any())


def test_privacy_avatar_at_start_up_and_without_a_face(tmp_path):
    # no face for frames 0-39, a face from 40 to 79, none after
    cam = FakeCamera(face=lambda i: 40 <= i < 80)
    pipe, backend, _ = build(tmp_path, cam, fps=100.0, max_frames=60)
    summary = pipe.run()
    vcam = FakeVirtualCamera.instances[0]
    assert vcam.closed and len(vcam.frames) == 60
    still = pipe.processor.library.current.still
    np.testing.assert_array_equal(vcam.frames[0], still)             # start-up: the avatar still
    assert not any(is_camera(f) for f in vcam.frames)                # never the camera
    assert summary.frames["no_face"] > 0 and backend.calls["keypoints"] > 0
    assert summary.stopped_by == "--max-frames"


def test_passthrough_only_on_the_explicit_key(tmp_path):
    pipe, _, _ = build(tmp_path, FakeCamera(n=20, live=False, fps=25.0))
    proc = pipe.processor
    frames = []
    for _ in range(6):
        f = pipe.capture.source.read()
        from splinecam.live.capture import CapturedFrame

        frames.append(proc.process(CapturedFrame(f, time.perf_counter(), len(frames), len(frames) / 25)))
        if len(frames) == 3:
            proc.handle(command_for_key(ord("p")), 0.0)
    kinds = [p.output.kind for p in frames]
    assert kinds[:3] == ["animated"] * 3 and kinds[3:] == ["passthrough"] * 3
    assert not any(is_camera(p.output.image) for p in frames[:3])
    assert all(is_camera(p.output.image) for p in frames[3:])
    proc.close()


def test_avatar_switching_uses_the_cache(tmp_path):
    pipe, backend, _ = build(tmp_path, FakeCamera(n=50, live=False, fps=25.0), n_avatars=3)
    proc = pipe.processor
    assert backend.calls["prepare_source"] == 3                       # each prepared once, at start
    from splinecam.live.capture import CapturedFrame

    seen = []
    for key in "2d3a1ddaa":
        proc.handle(command_for_key(ord(key)), 0.0)
        img = pipe.capture.source.read()
        p = proc.process(CapturedFrame(img, time.perf_counter(), 0, 0.0))
        r = proc.library.current.composer.face_rect
        seen.append((proc.library.index, tuple(p.output.image[r.y + r.h // 2, r.x + r.w // 2])))
    assert [i for i, _ in seen] == [1, 2, 2, 1, 0, 1, 2, 1, 0]
    assert all(colour == AVATAR_RGB[i] for i, colour in seen)         # the output follows the avatar
    assert backend.calls["prepare_source"] == 3 and pipe.processor.library.prepare_calls == 3
    proc.close()


def test_hotkeys_calibrate_mode_and_search(tmp_path):
    from splinecam.live.capture import CapturedFrame

    pipe, _, _ = build(tmp_path, FakeCamera(n=50, live=False, fps=25.0))
    proc = pipe.processor
    img = pipe.capture.source.read()
    proc.process(CapturedFrame(img, time.perf_counter(), 0, 0.0))
    first = proc.normaliser.calibration.kp_driving_ref.copy()          # relative: the first frame
    proc.handle(Command(Action.CALIBRATE), 0.0)
    img2 = img.copy()
    img2[100:140, 140:180] = 0                                          # a different pose
    proc.process(CapturedFrame(img2, time.perf_counter(), 1, 0.04))
    assert not np.allclose(proc.normaliser.calibration.kp_driving_ref, first)
    assert proc.modes == ("relative", "standard")                      # no AVD network: skipped
    proc.handle(Command(Action.CYCLE_MODE), 0.0)
    assert proc.normaliser.mode == "standard"
    proc.handle(Command(Action.CYCLE_MODE), 0.0)
    assert proc.normaliser.mode == "relative"
    assert command_for_key(ord("Q")).action is Action.QUIT and command_for_key(27).action is Action.QUIT
    assert command_for_key(-1) is None and command_for_key(ord("9")) == Command(Action.SELECT_AVATAR, 8)
    proc.close()


def test_metrics_json_and_unpaced_file(tmp_path):
    metrics = tmp_path / "m.json"
    pipe, backend, _ = build(tmp_path, FakeCamera(n=12, live=False, fps=25.0), metrics=metrics,
                             record=tmp_path / "r.mp4", virtual_camera=False)
    pipe.run()
    data = json.loads(metrics.read_text())
    assert set(data["frames"]) >= {"captured", "processed", "dropped", "output", "repeated", "no_face"}
    assert data["frames"]["processed"] == 12 and data["frames"]["output"] == 12 and data["frames"]["dropped"] == 0
    assert set(data["latency_ms"]) >= {"p50", "p95", "max"} and data["latency_ms"]["count"] == 12
    assert set(data["stages_ms"]) >= {"capture", "track", "keypoints", "normalise", "generate", "compose", "sinks"}
    assert data["fps"]["processed"] > 0 and data["backend"] == "passthrough" and data["device"] == "cpu"
    from splinecam.engines.media import count_frames

    assert count_frames(tmp_path / "r.mp4") == 12


def test_missing_virtual_camera_carries_on(tmp_path):
    def no_device(**kw):
        raise RuntimeError("'v4l2loopback' backend: No v4l2 loopback device found")

    from splinecam.live.sinks import open_virtual_camera  # noqa: F401 (the path under test)

    opts_said = []
    backend = PassThroughBackend()
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path)), crop="none", preview=False, output_size=(320, 180),
                       record=tmp_path / "r.mp4", max_frames=5)
    pipe = LivePipeline.build(opts, backend, source=FakeCamera(n=20, live=False, fps=25.0),
                              cropper=FaceCropper(FaceTracker(FakeDetector()), 256), camera_factory=no_device,
                              say=opts_said.append)
    summary = pipe.run()
    vc_lines = [s for s in opts_said if "virtual camera" in s]
    assert len(vc_lines) == 1 and "modprobe v4l2loopback" in vc_lines[0]
    assert summary.frames["output"] == 5 and (tmp_path / "r.mp4").is_file()


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, the previous one restored after: _thread.interrupt_main()
    does nothing under any other, and something earlier in the full suite leaves another one installed
    (seen twice: the Ctrl-C never came and the clip ran to its end)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_ends_cleanly(tmp_path, python_sigint):
    import _thread

    held = {}

    class Interrupting(PassThroughBackend):
        def keypoints(self, frame):
            if self.calls["keypoints"] == 6:
                _thread.interrupt_main()      # Ctrl-C, delivered to the main thread as a real one is
                deadline = time.perf_counter() + 10.0  # the frame in flight ends after the main thread
                while not held["pipe"]._stop.is_set() and time.perf_counter() < deadline:  # took it (a
                    time.sleep(0.01)                                                     # busy CI is slow)
            return super().keypoints(frame)

    metrics = tmp_path / "m.json"
    pipe, _, _ = build(tmp_path, FakeCamera(n=100, live=False, fps=25.0), backend=Interrupting(),
                       record=tmp_path / "r.mp4", metrics=metrics)
    held["pipe"] = pipe
    summary = pipe.run()
    assert summary.stopped_by == "Ctrl-C" and pipe.interrupted
    from splinecam.engines.media import count_frames

    processed = json.loads(metrics.read_text())["frames"]["processed"]   # the metrics were written
    assert 6 <= processed < 100                                          # stopped after the frame in flight
    assert count_frames(tmp_path / "r.mp4") == processed                 # the recording was finalised
    assert FakeVirtualCamera.instances[0].closed


def test_state_is_remembered_between_runs(tmp_path, config_home):
    from splinecam.live.commands import add_live_commands, options_from_args
    from splinecam.live.state import LiveState, load_state, save_state, state_path
    import argparse

    parser = argparse.ArgumentParser()
    add_live_commands(parser.add_subparsers(dest="cmd"))
    d = avatar_dir(tmp_path, 3)
    args = parser.parse_args(["live", "--avatar", str(d), "--camera", "3", "--smooth-beta", "7", "--crop", "none"])
    opts = options_from_args(args, load_state())
    assert opts.smoothing.beta == 7 and opts.calibration is None
    pipe, _, _ = build(tmp_path, FakeCamera(n=5, live=False, fps=25.0), n_avatars=3)
    pipe.options = opts
    from splinecam.live.capture import CapturedFrame

    pipe.processor.handle(Command(Action.SELECT_AVATAR, 2), 0.0)
    pipe.processor.process(CapturedFrame(pipe.capture.source.read(), time.perf_counter(), 0, 0.0))
    path = save_state(pipe.state(LiveState()))
    assert path == state_path() and str(path).startswith(str(config_home))
    pipe.processor.close()

    again = options_from_args(parser.parse_args(["live"]), load_state())   # nothing given: all remembered
    assert again.avatar == str(d.resolve()) and again.avatar_start == "a2.png" and again.camera == "3"
    assert again.smoothing.beta == 7 and again.calibration.shape == (50, 2)
    pipe2, _, _ = build(tmp_path, FakeCamera(n=5, live=False, fps=25.0), n_avatars=3,
                        avatar_start=again.avatar_start, calibration=again.calibration)
    assert pipe2.processor.library.index == 2
    np.testing.assert_allclose(pipe2.processor.normaliser.calibration.kp_driving_ref, again.calibration, atol=1e-5)
    pipe2.processor.close()
    override = options_from_args(parser.parse_args(["live", "--camera", "1", "--no-smooth"]), load_state())
    assert override.camera == "1" and not override.smoothing.enabled
    (config_home / "splinecam" / "state.json").write_text("{not json")
    assert load_state() == LiveState()                                   # unreadable: nothing remembered


# ----------------------------------------------------------------------------- the command line


def golden_args(shared):
    g = shared / "reference" / "golden-small"
    return ["--checkpoint", str(g / "checkpoint.pth.tar"), "--config", str(g / "config.yaml"), "--precision", "fp32"]


def test_cli_missing_camera_is_one_line(shared, capsys, tmp_path):
    from splinecam.cli import main

    rc = main(["live", "--camera", "9", "--avatar", str(shared / "data" / "avatars" / "mona.jpg"),
               "--no-preview", "--no-virtual-camera", *golden_args(shared)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "no such camera" in err[0]


def test_cli_avatar_without_a_face_is_one_line(shared, capsys, tmp_path):
    from splinecam.cli import main

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    rc = main(["live", "--camera", str(shared / "data" / "clips" / "webcam" / "lp-d12.mp4"), "--avatar", str(blank),
               "--no-preview", "--no-virtual-camera", "--max-frames", "1", *golden_args(shared)])
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("splinecam")]
    assert rc != 0 and len(err) == 1 and "no face found in the avatar wall.png" in err[0]


def test_headless_end_to_end_golden_small(shared, tmp_path, capsys, monkeypatch):
    from splinecam.engines.media import VideoReader, count_frames
    from splinecam.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["live", "--camera", str(shared / "data" / "clips" / "webcam" / "lp-d12.mp4"),
               "--avatar", str(shared / "data" / "avatars" / "mona.jpg"), "--no-preview", "--virtual-camera",
               "--record", "out.mp4", "--max-frames", "3", "--metrics", "m.json", *golden_args(shared)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "v4l2loopback" in text.out or "virtual camera /dev" in text.out   # no device here: one line, carried on
    assert count_frames(tmp_path / "out.mp4") == 3 and VideoReader(tmp_path / "out.mp4").size == (1280, 720)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["frames"]["processed"] == 3 and m["frames"]["output"] == 3 and m["frames"]["no_face"] == 0
    assert m["latency_ms"]["count"] == 3 and m["backend"] == "torch" and m["precision"] == "fp32"
    frames = VideoReader(tmp_path / "out.mp4").read_all()
    assert all(f.std() > 10 for f in frames)            # a picture, not a flat frame


def test_preview_hotkeys_reach_the_processing_and_quit(tmp_path):
    class FakePreview:
        """Presses D (next avatar) then, once that shows, Q."""

        closed = False

        def __init__(self):
            self.shown, self.keys = [], [ord("d")]

        def show(self, image, info):
            self.shown.append(info)
            return self.poll()

        def poll(self, ms=1):
            time.sleep(0.002)
            if self.shown and self.shown[-1].avatar.startswith("2/"):
                return ord("q")
            return self.keys.pop() if self.keys else -1

        def close(self):
            pass

    pipe, _, _ = build(tmp_path, FakeCamera(face=lambda i: True), n_avatars=2, fps=50.0)
    pipe.preview = preview = FakePreview()
    summary = pipe.run()
    assert summary.stopped_by == "quit key" and pipe.processor.library.index == 1
    assert preview.shown[0].avatar.startswith("1/") and preview.shown[-1].avatar.startswith("2/")
    assert any(info.inset is not None and info.inset_kp is not None for info in preview.shown)


def test_camera_away_sends_the_avatar_at_rest(tmp_path):
    class Unplugged(FakeCamera):
        def read(self):
            return super().read() if self.i < 10 else (time.sleep(0.01), None)[1]

    class Darker(PassThroughBackend):
        def generate(self, source, kp_driving, bg_param=None):
            return source.image // 2                                  # "animated" differs from the still

    pipe, _, _ = build(tmp_path, Unplugged(), backend=Darker(), fps=50.0, max_frames=60)
    pipe.capture.reconnect_s = 0.01
    summary = pipe.run()
    frames = FakeVirtualCamera.instances[0].frames
    still = pipe.processor.library.current.still
    animated = [i for i, f in enumerate(frames) if not np.array_equal(f, still)]
    assert animated and animated[0] > 0                                # still first, then animated
    assert np.array_equal(frames[-1], still) and max(animated) < len(frames) - 5   # then the still again
    assert summary.frames["processed"] == 10


def test_no_display_means_no_preview_and_one_line(monkeypatch):
    from splinecam.live.preview import PreviewWindow

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    said = []
    assert PreviewWindow.open("x", say=said.append) is None
    assert len(said) == 1 and "no display" in said[0]


def test_run_summary_is_typed_and_its_json_layout_unchanged(tmp_path):
    """pipe.run() returns a RunSummary; --metrics holds its to_json(), in the layout it always had (same
    keys, same order, plain strings for the mode: benchmarks and users read it by key) plus queued_ms (2026-12-08)."""
    from splinecam.live.metrics import RunSummary

    metrics = tmp_path / "m.json"
    pipe, _, _ = build(tmp_path, FakeCamera(n=6, live=False, fps=25.0), metrics=metrics, virtual_camera=False)
    summary = pipe.run()
    assert isinstance(summary, RunSummary)
    text = metrics.read_text()
    data = json.loads(text)
    assert data == json.loads(json.dumps(summary.to_json()))
    assert list(data) == ["frames", "fps", "latency_ms", "queued_ms", "stages_ms", "loop_ms", "backend", "device",
                          "precision", "source", "output_size", "paced", "fps_target", "stopped_by", "mode",
                          "duration_s"]
    assert list(data["fps"]) == ["processed", "output"]
    assert list(data["latency_ms"]) == list(data["queued_ms"]) == ["p50", "p95", "max", "mean", "count"]
    assert summary.queued_ms.count == 6 and 0 <= summary.queued_ms.p95 <= summary.latency_ms.max
    assert data["mode"] == "relative" and '"mode": "relative"' in text
    assert summary.frames["processed"] == 6 and summary.fps.processed == data["fps"]["processed"]
    assert summary.latency_ms.count == data["latency_ms"]["count"] == 6
    assert summary.stopped_by == data["stopped_by"] == "end of input"
    with pytest.raises(RuntimeError, match="runs once"):
        pipe.run()


def test_other_threads_read_a_published_view_not_the_processor(tmp_path):
    """The processing thread publishes a LoopView after every frame and command; the overlay and the
    control page read that copy: changing the processor's controls afterwards does not change it."""
    from splinecam.live.hotkeys import Action, Command
    from splinecam.live.kinds import FrameKind
    from splinecam.live.pipeline import LoopView

    pipe, _, _ = build(tmp_path, FakeCamera(n=5, live=False, fps=25.0), n_avatars=2, virtual_camera=False)
    pipe.run()
    view = pipe._view.get()
    assert isinstance(view, LoopView) and view.processed is not None
    assert view.processed.output.index == 4 and view.processed.output.kind == FrameKind.ANIMATED == "animated"
    pipe.command(Command(Action.MIRROR, 1))
    assert pipe.control_state()["mirror"] is False        # queued, not applied yet
    assert pipe.apply_commands(1.0) == 1
    assert pipe.control_state()["mirror"] is True
    pipe.processor.controls.mirror = False                   # the processor's own state moves on …
    assert pipe._view.get().controls.mirror is True          # … the published copy does not
    overlay = pipe._overlay(pipe._view.get())
    assert overlay.mirror is True and overlay.mode == "relative"
    assert pipe.control_state()["avatars"] == ["a0", "a1"]


def test_enums_are_their_strings():
    from splinecam.live.capture import CaptureStatus
    from splinecam.live.kinds import FrameKind
    from splinecam.live.normalise import MODES, KeypointNormaliser, NormaliseMode
    from splinecam.live.tracking import PosePhase

    assert MODES == ("relative", "avd", "standard")
    for member in (*NormaliseMode, *FrameKind, *PosePhase, *CaptureStatus):
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
        assert json.dumps({"v": member}) == json.dumps({"v": member.value})
    n = KeypointNormaliser(np.zeros((50, 2), np.float32), "standard")
    assert n.mode is NormaliseMode.STANDARD and n.mode == "standard"


def test_the_networks_run_inside_the_inference_gate(tmp_path):
    """Tracking, keypoints and the generator mark the process busy (engines/priority.GATE), so that the
    recorder's encoder waits for the gap after them; between frames the gate is idle again."""
    from splinecam.engines.priority import GATE

    seen = []

    class Watching(PassThroughBackend):
        def keypoints(self, *a, **k):
            seen.append(("keypoints", GATE.wait_idle(0.0)))
            return super().keypoints(*a, **k)

        def generate(self, *a, **k):
            seen.append(("generate", GATE.wait_idle(0.0)))
            return super().generate(*a, **k)

    pipe, _, _ = build(tmp_path, FakeCamera(n=6, live=False, fps=25.0), backend=Watching(), virtual_camera=False)
    pipe.run()
    assert {name for name, _ in seen} == {"keypoints", "generate"}
    assert not any(idle for _, idle in seen)          # never idle while a network runs
    assert GATE.wait_idle(0.0)                         # and idle once the loop is done
