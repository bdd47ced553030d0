"""The live loop: capture thread → processing → sinks, on CPU threads (DESIGN.md §1).

    pipeline = LivePipeline.build(options, backend)      # opens the camera, avatars, sinks
    summary = pipeline.run()                              # until --max-frames, end of file, Q, Ctrl-C

Threads: the capture thread reads and stamps frames (live/capture.py); the processing thread
runs :class:`FrameProcessor` (track → crop → keypoints → smooth → normalise → generate →
compose); the main thread drives the preview window and its hotkeys (HighGUI wants one thread),
responsive however slow inference is; for a camera or ``--realtime`` the sender thread sends the
newest output at a steady ``--fps`` to the virtual camera and the recorder (which writes in its
own thread). An unpaced file skips the sender: every
processed frame goes to the sinks, in order.

Hand-offs between threads, each explicit:

- capture → processing: the frame slot (live/capture.py, a condition variable);
- preview keys (main thread) and the control page (HTTP threads) → processing: ``Command``s on a
  ``queue.SimpleQueue``, applied by :meth:`FrameProcessor.handle` between two frames. The processing
  thread is the only writer of :class:`Controls`, of the normaliser, the avatar library and the search;
- processing → main thread and HTTP threads: a :class:`LoopView` (the newest processed frame, the
  status line, a copy of the controls, mode, avatar, search) published whole into a :class:`ViewSlot`
  (a lock) after every frame and every command; the overlay and ``control_state`` read only that;
- processing → sinks: the steady sender (live/sinks.py) or, unpaced, the sinks' own queues;
- counters and timings: :class:`~splinecam.live.metrics.LiveMetrics` (its own lock).

Privacy (DESIGN.md §1, the brief): sinks only ever receive frames composed from the avatar —
the still at start-up, the animated avatar, the held / eased / resting avatar while no face is
found or the camera is away — except while the user holds the pass-through toggle (key P).

On the TensorRT backend (CUDA) the processor runs the networks through the overlapped two-stream
pipeline (live/inference.py, engines/cuda_pipeline.py): the same steps, but ``process`` returns the
frame before (None for the first; ``flush()`` gives the last), so the keypoints of frame N+1 overlap
the generator of frame N. Every other backend runs them directly; the loop, the sinks and the
metrics are the same either way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from splinecam.engines.backends.base import Backend
from splinecam.engines.errors import BackendOffline, SplinecamError
from splinecam.engines.interrupts import Interrupted, as_interrupted, deferred, hurry
from splinecam.engines.one_euro import OneEuroFilter
from splinecam.engines.output_guard import GeneratorOutputError, check_frame
from splinecam.engines.priority import GATE
from splinecam.live.avatars import AvatarLibrary
from splinecam.live.calibration import BestFrameSearch, Match, ghost_overlay
from splinecam.live.capture import CaptureStatus, CaptureThread, CapturedFrame, FrameSource, Pacing, open_source
from splinecam.live.compose import ComposeOptions, fit_picture
from splinecam.live.hotkeys import Action, Command, command_for_key
from splinecam.live.inference import DirectInference, OverlappedInference, inference_for
from splinecam.live.kinds import FrameKind
from splinecam.live.metrics import LiveMetrics, RunSummary
from splinecam.live.normalise import KeypointNormaliser, NormaliseMode
from splinecam.live.preview import OverlayInfo, PreviewWindow
from splinecam.live.sinks import OutputFrame, RecorderSink, SinkFanout, SteadySender, open_virtual_camera
from splinecam.live.smoothing import SmoothingSettings
from splinecam.live.state import LiveState
from splinecam.live.tracking import DETECT_EVERY, FaceCropper, PoseFallback, PosePhase

log = logging.getLogger(__name__)


@dataclass
class LiveOptions:
    """Everything ``splinecam live`` / ``demo`` can set (see live/commands.py for the flags)."""

    avatar: str
    camera: str = "0"
    camera_size: tuple[int, int] | None = (1280, 720)
    camera_fps: float | None = 30.0
    output_size: tuple[int, int] = (1280, 720)
    fps: float | None = None             # None: the camera's / file's own rate (30 if unknown)
    mode: str = "relative"
    compose: str = "pad"
    background: str = "blur"
    mirror: bool = False
    crop: str = "auto"
    avatar_start: str | None = None      # file name of the first avatar of a folder
    virtual_camera: bool = True
    virtual_camera_device: str | None = None
    preview: bool = True
    record: Path | None = None
    max_frames: int | None = None
    metrics: Path | None = None
    realtime: bool = False
    loop: bool = False
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    calibration: np.ndarray | None = None  # remembered reference keypoints (K, D)
    relative_jacobian: bool = True       # FOMM's relative jacobian in relative mode (off: positions only)
    hold_s: float = 0.25
    ease_s: float = 0.5
    serve: tuple[str, int] | None = None  # --serve: the MJPEG stream + control page (live/stream_server.py)
    serve_token: str | None = None        # what requests from other machines must carry


@dataclass
class Controls:
    """What the hotkeys change while running. Written by the processing thread only
    (:meth:`FrameProcessor.handle`); other threads see copies, in the :class:`LoopView`."""

    mirror: bool = False
    passthrough: bool = False
    smoothing: bool = True
    show_overlay: bool = True
    show_help: bool = False
    calibrate: bool = False          # set by the key; the next frame with a face is the reference
    quit: bool = False
    message: str = ""                # a transient line for the overlay
    message_until: float = 0.0


@dataclass
class Processed:
    """One processed frame. output: what the sinks get; crop / kp_raw: the driving face crop
    (S, S, 3) and its smoothed raw keypoints (K, 2), None without a face; status: "" or why the
    avatar is not being driven; match: the best-frame search's score for this frame."""

    output: OutputFrame
    crop: np.ndarray | None
    kp_raw: np.ndarray | None
    status: str = ""
    match: Match | None = None
    camera: np.ndarray | None = None


@dataclass
class _InFlight:
    """A frame between its inference and its composition: the avatar it was generated for, and its face —
    an (S,S,3) image, or the overlapped pipeline's ticket for one (``image``: a composed pass-through)."""

    frame: CapturedFrame
    avatar: object
    face: object
    kind: FrameKind
    crop: np.ndarray | None = None
    kp_raw: np.ndarray | None = None
    status: str = ""
    match: Match | None = None
    image: np.ndarray | None = None
    refused: GeneratorOutputError | None = None   # the output guard refused the generated face


@dataclass(frozen=True)
class LoopView:
    """What the processing thread shows the other threads, as of one moment: the newest processed frame
    (None before the first, or while the camera is away), the status line (why no frame comes: "camera
    lost: reconnecting…"), a copy of the controls, the mode, the avatars and the search. Built by the
    processing thread and never changed afterwards (its arrays are not written again either)."""

    processed: Processed | None = None
    status: str = ""
    controls: Controls = field(default_factory=Controls)
    mode: str = NormaliseMode.RELATIVE
    avatar_index: int = 0
    avatar_names: tuple[str, ...] = ()
    avatar_image: np.ndarray | None = None   # the current avatar's crop (the ghost overlay while searching)
    searching: bool = False
    stages_ms: dict[str, float] = field(default_factory=dict)   # the last frame's stage times

    @property
    def message(self) -> str:
        """The controls' transient message, while it lasts."""
        c = self.controls
        return c.message if time.perf_counter() < c.message_until else ""


class ViewSlot:
    """The processing thread's hand-off to the main thread and the control page's threads: ``publish``
    replaces the whole :class:`LoopView` under a lock, ``get`` returns the newest one."""

    def __init__(self, view: LoopView | None = None):
        self._lock = threading.Lock()
        self._view = view or LoopView()

    def publish(self, view: LoopView) -> None:
        with self._lock:
            self._view = view

    def get(self) -> LoopView:
        with self._lock:
            return self._view


NO_FACE_STATUS = {PosePhase.HOLD: "no face: holding the last pose", PosePhase.EASING: "no face: easing to rest",
                  PosePhase.NEUTRAL: "no face in view: showing the avatar"}


class FrameProcessor:
    """The per-frame work of the live loop, on the processing thread. ``inference``: how the networks
    run (live/inference.py; default: overlapped on a backend with a GPU pipeline, else direct)."""

    def __init__(self, backend: Backend, library: AvatarLibrary, cropper: FaceCropper, metrics: LiveMetrics,
                 mode: str = "relative", smoothing: SmoothingSettings = SmoothingSettings(),
                 controls: Controls | None = None, output_size: tuple[int, int] = (1280, 720),
                 search: BestFrameSearch | None = None, hold_s: float = 0.25, ease_s: float = 0.5,
                 inference: DirectInference | OverlappedInference | None = None, relative_jacobian: bool = True):
        self.backend = backend
        self.inference = inference if inference is not None else inference_for(backend)
        self._pending: _InFlight | None = None
        self.library = library
        self.cropper = cropper
        self.metrics = metrics
        self.stages = metrics.stages
        self.controls = controls or Controls(smoothing=smoothing.enabled)
        self.output_size = output_size
        self.smoothing = smoothing
        self.smoother = OneEuroFilter.from_settings(smoothing)
        self.fallback = PoseFallback(hold_s, ease_s)
        self.search = search or BestFrameSearch()
        self._bad_streak = 0        # consecutive generated frames the output guard refused
        self.generated_ok = 0       # generated frames it let through
        avatar = library.current
        avd = backend.avd if backend.has_avd else None
        self.normaliser = KeypointNormaliser(avatar.source.kp, mode, avd, relative_jacobian)

    # --- controls
    @property
    def modes(self) -> tuple[NormaliseMode, ...]:
        return tuple(m for m in NormaliseMode if m is not NormaliseMode.AVD or self.backend.has_avd)

    def view(self, processed: Processed | None, status: str) -> LoopView:
        """This thread's state as the other threads may see it (call on the processing thread)."""
        lib = self.library
        return LoopView(processed, status, replace(self.controls), self.normaliser.mode, lib.index,
                        tuple(a.name for a in lib.avatars), lib.current.image, self.search.active,
                        dict(self.stages.last_ms))

    def cycle_mode(self) -> str:
        modes = self.modes
        i = modes.index(self.normaliser.mode) if self.normaliser.mode in modes else -1
        self.normaliser.set_mode(modes[(i + 1) % len(modes)])
        return self.normaliser.mode

    def select_avatar(self, i: int) -> bool:
        if i == self.library.index or not self.library.select(i):
            return False
        self._avatar_changed()
        return True

    def step_avatar(self, step: int) -> None:
        (self.library.next if step > 0 else self.library.previous)()
        self._avatar_changed()

    def _avatar_changed(self) -> None:
        self.normaliser.set_source(self.library.current.source.kp)
        self.fallback.reset()
        if self.search.active:
            self.search.finish()

    def restore_calibration(self, kp_ref: np.ndarray | None) -> bool:
        kp_ref = None if kp_ref is None else np.asarray(kp_ref, np.float32)
        if kp_ref is None or kp_ref.shape != self.library.current.source.kp.shape:
            return False
        self.normaliser.calibrate(kp_ref)
        return True

    def toggle_search(self, t: float) -> str:
        if self.search.active:
            return self._finish_search()
        if not self.search.start(self.library.current.image, t):
            return "no face landmarks in the avatar: best-frame search unavailable"
        return "searching for the best frame: match the avatar's pose, press F again"

    def _finish_search(self) -> str:
        kp = self.search.finish()
        if kp is None:
            return "best-frame search: no face seen, calibration unchanged"
        self.normaliser.calibrate(kp)
        self.fallback.reset()
        return "calibrated on the best-matching frame"

    # --- the work
    def still(self) -> OutputFrame:
        """The avatar at rest (start-up, camera away)."""
        a = self.library.current
        image = a.still if not self.controls.mirror else a.still[:, ::-1].copy()
        return OutputFrame(image, None, FrameKind.AVATAR)

    def process(self, frame: CapturedFrame) -> Processed | None:
        """One captured frame (H, W, 3 RGB) → the output frame (and what the overlay needs): this frame's,
        or with the overlapped GPU inference the previous frame's (None for the first; see flush)."""
        current = self._infer(frame)
        if not self.inference.lag:
            return self._finish(current)
        previous, self._pending = self._pending, current
        return None if previous is None else self._finish(previous)

    def flush(self) -> Processed | None:
        """The frame still in flight (overlapped GPU inference), or None."""
        pending, self._pending = self._pending, None
        return None if pending is None else self._finish(pending)

    def _infer(self, frame: CapturedFrame) -> _InFlight:
        """Everything up to the generator: track, crop, keypoints, smoothing, calibration, normalisation,
        search, fallback — and the generator started (done, or in flight)."""
        c = self.controls
        t = frame.media_time
        if c.passthrough:
            with self.stages.time("compose"):
                image = fit_picture(frame.image, self.output_size, c.mirror)
            return _InFlight(frame, None, None, FrameKind.PASSTHROUGH, status="PASS-THROUGH", image=image)
        with GATE.busy():  # the recorder's encoder waits for the gap after (engines/priority.py)
            return self._infer_networks(frame, t)

    def _infer_networks(self, frame: CapturedFrame, t: float) -> _InFlight:
        with self.stages.time("track"):
            tracked = self.cropper.update(frame)
        avatar = self.library.current
        match, kp_raw, status = None, None, ""
        try:
            face, kind, kp_raw, status, match = self._drive(tracked, avatar, t)
        except BackendOffline as err:  # a remote worker away: the avatar at rest, as without a face
            self.metrics.count("backend_offline")
            self.smoother.reset()
            face, kind, status = avatar.image, FrameKind.AVATAR, str(err)
        except GeneratorOutputError as err:  # the output guard refused the face (engines/output_guard.py)
            return _InFlight(frame, avatar, None, FrameKind.AVATAR, tracked.crop, None, "", None, refused=err)
        return _InFlight(frame, avatar, face, kind, tracked.crop, kp_raw, status, match)

    def _drive(self, tracked, avatar, t: float):
        """The networks' part of :meth:`_infer` → (face (S,S,3) or in flight, kind, kp_raw, status, match)."""
        c = self.controls
        match, kp_raw, status = None, None, ""
        if tracked.found:
            with self.stages.time("keypoints"):
                kp = self.inference.keypoints(tracked.crop, avatar.source)
            with self.stages.time("normalise"):
                kp_raw = self.smoother(kp, t) if c.smoothing else kp
                if c.calibrate:
                    self.normaliser.calibrate(kp_raw)
                    self.fallback.reset()
                    c.calibrate = False
                kp_drive = self.normaliser(kp_raw)
                self.fallback.good(kp_drive, t)
            if self.search.active:
                with self.stages.time("search"):
                    match = self.search.update(tracked.crop, kp_raw, t)
                if self.search.expired(t):
                    self._message(self._finish_search())
            with self.stages.time("generate"):
                face = self.inference.generate(avatar.source, kp_drive)
            kind = FrameKind.ANIMATED
        else:
            self.metrics.count("no_face")
            self.smoother.reset()
            pose = self.fallback.pose(avatar.source.kp, t)
            status = NO_FACE_STATUS[pose.phase]
            if pose.phase is PosePhase.NEUTRAL:
                face = avatar.image
            else:
                with self.stages.time("generate"):
                    face = self.inference.pose(avatar.source, pose.kp)
            kind = FrameKind.AVATAR
        return face, kind, kp_raw, status, match

    def _finish(self, f: _InFlight) -> Processed:
        """The frame's face (waiting for the GPU when it is in flight) composed into the output frame."""
        if f.kind is FrameKind.PASSTHROUGH:
            return Processed(OutputFrame(f.image, f.frame.timestamp, FrameKind.PASSTHROUGH, f.frame.index), None, None,
                             f.status, camera=f.frame.image)
        if f.refused is not None:
            return self._refused(f, f.refused)
        face = f.face
        if self.inference.lag:
            with self.stages.time("gpu_wait"):
                face = self.inference.resolve(face)
            try:  # the GPU pipeline's frames come back as uint8: the all-black half of the guard
                check_frame(face, f.avatar.image)
            except GeneratorOutputError as err:
                return self._refused(f, err)
        if f.kind is FrameKind.ANIMATED:
            self._bad_streak, self.generated_ok = 0, self.generated_ok + 1
        with self.stages.time("compose"):
            image = f.avatar.composer.compose(face, self.controls.mirror)
        return Processed(OutputFrame(image, f.frame.timestamp, f.kind, f.frame.index), f.crop, f.kp_raw, f.status,
                         f.match, camera=f.frame.image)

    def _refused(self, f: _InFlight, err: GeneratorOutputError) -> Processed:
        """The output guard refused the generated frame: hold the avatar (at rest), count it, say it once
        per run of bad frames (terminal and preview)."""
        self.metrics.count("bad_output")
        if not self._bad_streak:
            log.error("%s; holding the avatar", err)
        self._bad_streak += 1
        with self.stages.time("compose"):
            image = f.avatar.composer.compose(f.avatar.image, self.controls.mirror)
        return Processed(OutputFrame(image, f.frame.timestamp, FrameKind.AVATAR, f.frame.index), f.crop, f.kp_raw,
                         "generator output refused: holding the avatar (see the terminal)", f.match,
                         camera=f.frame.image)

    def _message(self, text: str, seconds: float = 3.0) -> None:
        self.controls.message, self.controls.message_until = text, time.perf_counter() + seconds

    def handle(self, cmd: Command, t: float) -> None:
        """Apply a command: a hotkey's, or the control page's (live/control.py). Switches (pass-through,
        smoothing, mirror) toggle, or take ``cmd.arg`` 0 / 1 when given (the control page's on / off)."""
        c, a = self.controls, cmd.action
        if a is Action.QUIT:
            c.quit = True
        elif a is Action.SELECT_AVATAR:
            if self.select_avatar(cmd.arg):
                self._message(f"avatar {self.library.current.name}")
        elif a in (Action.NEXT_AVATAR, Action.PREVIOUS_AVATAR):
            self.step_avatar(1 if a is Action.NEXT_AVATAR else -1)
            self._message(f"avatar {self.library.current.name}")
        elif a is Action.CALIBRATE:
            c.calibrate = True
            self._message("calibrated: this pose is the reference")
        elif a is Action.FIND_BEST:
            self._message(self.toggle_search(t), 5.0)
        elif a is Action.CYCLE_MODE:
            self._message(f"mode {self.cycle_mode()}")
        elif a is Action.PASSTHROUGH:
            c.passthrough = (not c.passthrough) if cmd.arg is None else bool(cmd.arg)
            self._message("pass-through ON: the meeting sees your camera" if c.passthrough
                          else "pass-through off: the meeting sees the avatar")
        elif a is Action.MIRROR:
            c.mirror = (not c.mirror) if cmd.arg is None else bool(cmd.arg)
        elif a is Action.SMOOTHING:
            c.smoothing = (not c.smoothing) if cmd.arg is None else bool(cmd.arg)
            self.smoother.reset()
            self._message(f"smoothing {'on' if c.smoothing else 'off'}")
        elif a is Action.OVERLAY:
            c.show_overlay = not c.show_overlay
        elif a is Action.HELP:
            c.show_help = not c.show_help

    def close(self) -> None:
        self._pending = None
        self.inference.close()
        self.cropper.close()
        self.search.close()


_KEEP = object()  # LivePipeline._publish: "as last published"


class LivePipeline:
    """Owns the threads and sinks of one run; :meth:`run` (once) returns the metrics summary."""

    def __init__(self, options: LiveOptions, processor: FrameProcessor, capture: CaptureThread,
                 fanout: SinkFanout, metrics: LiveMetrics, fps: float, preview: PreviewWindow | None = None,
                 say=print):
        self.options = options
        self.processor = processor
        self.capture = capture
        self.fanout = fanout
        self.metrics = metrics
        self.fps = fps
        self.preview = preview
        self.say = say
        self.live = capture.pacing.newest_wins
        self.interrupted = False
        self.stream = None  # the --serve StreamServer (also one of the fan-out's sinks)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()   # main / HTTP threads → processing
        self._view = ViewSlot(processor.view(None, ""))            # processing → main / HTTP threads
        self.interrupt: Interrupted | None = None   # the signal that stopped the run (raised again by the command)
        self.recorded: int | None = None            # frames in the finalised recording
        self.stopped_by = "end of input"            # the processing thread's stop reason or the signal (main thread)
        self._sender: SteadySender | None = None    # the steady-fps sender of a live source (None: unpaced file)
        self._stop = threading.Event()              # run() → processing thread: stop
        self._done = threading.Event()              # processing thread → run(): it has stopped
        self._error: BaseException | None = None    # what stopped the processing thread, raised by run()

    @classmethod
    def build(cls, options: LiveOptions, backend: Backend, source: FrameSource | None = None,
              cropper: FaceCropper | None = None, camera_factory=None, say=print) -> "LivePipeline":
        """Open everything for ``options``. Raises SplinecamError (one line) for a missing camera,
        an avatar without a face, … — before any sink is opened."""
        from splinecam.engines.faces.tracker import FaceTracker

        compose = ComposeOptions(options.output_size, options.compose, options.background)
        library = AvatarLibrary.load(options.avatar, backend, compose, options.crop, start=options.avatar_start,
                                     say=say)
        if source is None:
            source = open_source(options.camera, options.camera_size, options.camera_fps)
        if hasattr(source, "describe"):
            say(f"splinecam: input {source.describe()}")
        pacing = Pacing.for_source(source, options.realtime, options.loop)
        fps = float(options.fps or source.fps or 30.0)
        metrics = LiveMetrics(info={"backend": backend.name, "device": backend.device, "precision": backend.precision,
                                    "source": getattr(source, "label", "?"),
                                    "output_size": f"{options.output_size[0]}x{options.output_size[1]}",
                                    "paced": pacing.newest_wins, "fps_target": fps})
        library.prepare_all()
        if cropper is None:
            cropper = FaceCropper(FaceTracker(detect_every=DETECT_EVERY), backend.size)
            cropper.tracker.detector.detect(np.zeros((64, 64, 3), np.uint8))  # build the detector graphs now
        controls = Controls(mirror=options.mirror, smoothing=options.smoothing.enabled)
        processor = FrameProcessor(backend, library, cropper, metrics, options.mode, options.smoothing, controls,
                                   options.output_size, hold_s=options.hold_s, ease_s=options.ease_s,
                                   relative_jacobian=options.relative_jacobian)
        if options.calibration is not None:
            processor.restore_calibration(options.calibration)
        sinks = []
        stream = None
        if options.serve is not None:  # first: a port in use fails before any other sink is opened
            from splinecam.live.stream_server import StreamServer

            stream = StreamServer(*options.serve, token=options.serve_token, say=say)
            sinks.append(stream)
            metrics.sections["stream"] = stream.report
        if options.virtual_camera:
            sinks.append(open_virtual_camera(options.output_size, fps, options.virtual_camera_device,
                                             camera_factory, say))
        if options.record is not None:
            camera_file = options.camera if Path(str(options.camera)).is_file() else None
            sinks.append(RecorderSink(options.record, fps, options.output_size, block=not pacing.newest_wins,
                                      metrics=metrics, inputs=[camera_file, options.avatar]))
        for name, report in getattr(backend, "metric_sections", {}).items():
            metrics.sections[name] = report
        fanout = SinkFanout(sinks, metrics)
        preview = PreviewWindow.open("splinecam", say) if options.preview else None
        capture = CaptureThread(source, pacing)
        pipeline = cls(options, processor, capture, fanout, metrics, fps, preview, say)
        if stream is not None:
            stream.controller, pipeline.stream = pipeline, stream
        return pipeline

    # --- remote control (the stream server's control page: live/control.py)
    def command(self, cmd: Command) -> None:
        """Queue a command for the processing thread, as a hotkey does."""
        self._commands.put(cmd)

    def control_state(self) -> dict:
        """What the control page shows (called from its HTTP threads: read from the published view)."""
        v = self._view.get()
        c = v.controls
        return {"avatars": list(v.avatar_names), "avatar": v.avatar_index, "passthrough": c.passthrough,
                "smoothing": c.smoothing, "mirror": c.mirror, "mode": v.mode, "searching": v.searching,
                "message": v.message,
                "status": v.status or (v.processed.status if v.processed is not None else ""),
                "fps": round(self.metrics.recent_fps(), 2)}

    def _publish(self, processed: Processed | None | object = _KEEP, status: str | object = _KEEP) -> None:
        """Processing thread: make its state as of now the view the other threads read (``processed`` /
        ``status`` left out: the last published ones)."""
        last = self._view.get()
        self._view.publish(self.processor.view(last.processed if processed is _KEEP else processed,
                                               last.status if status is _KEEP else status))

    def apply_commands(self, t: float) -> int:
        """Processing thread (or a caller driving the processor itself): apply every queued command in
        order, between two frames, and publish the result; returns how many there were."""
        n = 0
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            self.processor.handle(cmd, t)
            n += 1
        if n:
            self._publish()
        return n

    # --- the loop
    def _overlay(self, v: LoopView) -> OverlayInfo:
        """The preview's overlay (main thread) from a published view."""
        c, p, status = v.controls, v.processed, v.status
        stages = dict(v.stages_ms)
        capture_ms = self.capture.timer.last_ms.get("capture")
        if capture_ms is not None:
            stages = {"capture": capture_ms, **stages}
        inset, kp, match = None, None, None
        if p is not None:
            match = p.match
            if p.crop is not None:
                inset = ghost_overlay(p.crop, v.avatar_image) if v.searching else p.crop
                kp = p.kp_raw
            elif p.camera is not None:
                size = self.processor.backend.size
                inset = fit_picture(p.camera, (size, size))
            status = status or p.status
        name = v.avatar_names[v.avatar_index] if v.avatar_names else ""
        return OverlayInfo(self.metrics.recent_fps(), self.metrics.recent_latency_ms(), stages,
                           " | ".join(s for s in (status, v.message) if s), v.mode,
                           f"{v.avatar_index + 1}/{len(v.avatar_names)} {name}",
                           c.smoothing, c.mirror, c.passthrough, inset, kp, match, c.show_overlay, c.show_help)

    def run(self) -> RunSummary:
        """Run until --max-frames output frames, the end of an unlooped file, Q / Esc, the window
        closed, or Ctrl-C; always finalises the recording, releases the virtual camera, writes
        --metrics. Returns the metrics summary (with "stopped_by").

        The processing runs in its own thread; the main thread keeps the preview and its hotkeys
        responsive (~60 Hz) however slow inference is, and takes Ctrl-C. Hotkeys reach the
        processing through a queue and apply between two frames.
        """
        opts, proc = self.options, self.processor
        if self._done.is_set() or self._stop.is_set():
            raise RuntimeError("LivePipeline.run() runs once: build a new pipeline")
        if self.live:
            self._sender = SteadySender(self.fanout, self.fps, proc.still(), opts.max_frames).start()
        self.capture.start()
        worker = threading.Thread(target=self._work, name="splinecam-processing", daemon=True)
        worker.start()
        try:
            shown, drawn_at = None, 0.0
            while not self._done.is_set():
                if self.preview is None:
                    self._done.wait(0.1)
                    continue
                view = self._view.get()
                p = view.processed
                if p is not shown or time.perf_counter() - drawn_at > 0.25:  # new frame, or refresh the overlay
                    image = p.output.image if p is not None else proc.still().image
                    key = self.preview.show(image, self._overlay(view))
                    shown, drawn_at = p, time.perf_counter()
                else:
                    key = self.preview.poll(15)
                cmd = command_for_key(key)
                if cmd is not None:
                    self._commands.put(cmd)
                if self.preview.closed:
                    self._commands.put(Command(Action.QUIT))
        except KeyboardInterrupt as exc:
            self._interrupted(exc)
        finally:
            self._stop.set()
            self.capture.slot.close()
            with deferred():  # a signal now is raised after the recording is finalised
                try:
                    while worker.is_alive() and not hurry():  # a second signal: not waiting for the frame in flight
                        worker.join(0.1)
                except KeyboardInterrupt as exc:  # the same, without splinecam's handlers (a library caller)
                    self._interrupted(exc)
                summary, errors = self._finish(hurried=worker.is_alive())
        if self._error is not None:
            raise self._error
        if errors:
            raise SplinecamError(errors[0])
        return summary

    def _interrupted(self, exc: KeyboardInterrupt) -> None:
        stop = as_interrupted(exc)
        if self.interrupt is None:
            self.interrupt = stop
            self.stopped_by = "Ctrl-C" if stop.name == "SIGINT" else stop.name
        self.interrupted = True

    def _work(self) -> None:
        """The processing thread: frames → processor → sender / sinks, hotkey commands between frames;
        after each, the view the other threads read is published."""
        proc, metrics, sender = self.processor, self.metrics, self._sender
        last_frame_t = time.perf_counter()
        away_shown = False
        last_t = 0.0
        latest, status = None, ""
        try:
            while not self._stop.is_set():
                self.apply_commands(last_t)
                stop = self._stop_reason(metrics)
                if stop:
                    self.stopped_by = stop
                    return
                frame = self.capture.get(timeout=0.05)
                if frame is None:
                    if self.capture.ended:
                        self._deliver(proc.flush())  # the overlapped GPU path's last frame
                        return
                    idle = time.perf_counter() - last_frame_t
                    if idle > 0.5 and (self.capture.status == CaptureStatus.RECONNECTING or idle > 2.0):
                        away = ("camera lost: reconnecting…" if self.capture.status == CaptureStatus.RECONNECTING
                                else "waiting for the camera…")
                        if not away_shown and sender is not None:
                            sender.publish(proc.still())  # no stale pose while the camera is away
                            latest = None
                            away_shown = True
                        if away != status:
                            status = away
                            self._publish(latest, status)
                    continue
                last_frame_t, away_shown, last_t, status = time.perf_counter(), False, frame.media_time, ""
                metrics.queued(last_frame_t - frame.timestamp)
                p = self._deliver(proc.process(frame))  # None: the overlapped GPU path's first frame
                latest = p if p is not None else latest
                self._publish(latest, status)
        except BaseException as err:  # reported by run() in the main thread, after cleaning up
            self._error = err
            self.stopped_by = f"error: {err}"
            if sender is not None:
                sender.publish(proc.still())  # on an error the meeting sees the avatar at rest
        finally:
            self._done.set()

    def _stop_reason(self, metrics: LiveMetrics) -> str | None:
        """Why the loop stops before the next frame, or None."""
        if self._sender is not None and self._sender.done.is_set():
            return "--max-frames"
        if self._sender is None and self.options.max_frames is not None and \
                metrics.counts["output"] >= self.options.max_frames:
            return "--max-frames"
        if self.processor.controls.quit:
            return "quit key"
        return None

    def _deliver(self, p: Processed | None) -> Processed | None:
        """A processed frame to the sender (paced) or straight to the sinks (unpaced file); returns it."""
        if p is None:
            return None
        self.metrics.processed()
        if self._sender is not None:
            self._sender.publish(p.output)
        else:
            self.fanout.deliver(p.output)
        return p

    def _finish(self, hurried: bool = False) -> tuple[RunSummary, list[str]]:
        """Stop the threads, close the sinks (recording finalised), write the metrics. ``hurried``: the
        processing thread is still busy with a frame (a second signal): its trackers are left open
        for the process exit, not closed under it."""
        proc, metrics = self.processor, self.metrics
        if self._sender is not None:
            self._sender.stop()
        self.capture.stop()
        recorder = next((s for s in self.fanout.sinks if isinstance(s, RecorderSink)), None)
        errors = self.fanout.close()
        if recorder is not None and recorder.writer.frames_written and not any(str(recorder.path) in e for e in errors):
            self.recorded = recorder.writer.frames_written
        if self.preview is not None:
            self.preview.close()
        if not hurried:
            proc.close()
        metrics.set_count("captured", self.capture.captured)
        metrics.set_count("dropped", self.capture.dropped)
        metrics.set_count("reconnects", self.capture.reconnects)
        for k, v in self.capture.timer.totals_ms.items():
            metrics.stages.totals_ms[k] = v
            metrics.stages.counts[k] = self.capture.timer.counts[k]
        metrics.info["stopped_by"] = self.stopped_by
        metrics.info["mode"] = proc.normaliser.mode
        summary = metrics.summary()
        if self.options.metrics:
            try:
                summary = metrics.write(self.options.metrics)
            except SplinecamError as err:  # checked before the run; a disk that filled up since
                errors.append(str(err))
        for e in errors:
            self.say(f"splinecam: error: {e}")
        return summary, errors

    def state(self, previous: LiveState) -> LiveState:
        """What to remember of this run (live/state.py)."""
        proc = self.processor
        cal = proc.normaliser.calibration
        return replace(previous, avatar=str(Path(self.options.avatar).expanduser().resolve()),
                       avatar_name=proc.library.current.path.name, camera=str(self.options.camera),
                       mode=proc.normaliser.mode,
                       calibration=cal.kp_driving_ref.round(5).tolist() if cal is not None else previous.calibration,
                       smoothing=proc.controls.smoothing, smooth_min_cutoff=self.options.smoothing.min_cutoff,
                       smooth_beta=self.options.smoothing.beta, mirror=proc.controls.mirror)
