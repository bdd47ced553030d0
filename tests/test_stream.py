"""The driverless stream (live/stream_server.py) and its control page (live/control.py): MJPEG at the
loop's rate, distinct frames, the privacy rule, slow / vanishing / several viewers, the control page's
commands through the hotkeys' code path, refusals of other origins and of other machines without the
token, and a real browser (Debian's chromium, headless) showing the avatar on /."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from splinecam.live.control import ControlError, command_from_request
from splinecam.live.hotkeys import Action, Command
from splinecam.live.passthrough import PassThroughBackend
from splinecam.live.sinks import OutputFrame, SinkFanout, SteadySender
from splinecam.live.stream_server import StreamServer
from tests.conftest import REPO

CLIP = REPO / "live" / "assets" / "webcam.mp4"
AVATAR = REPO / "live" / "assets" / "mona.jpg"


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


class MarkedBackend(PassThroughBackend):
    """A fast fake model: the avatar with two markers that change with every generated frame: a small one whose
    place and grey level make every frame distinct (period 6400), and a 12×12 one that steps 12 px and alternates
    white / black, so that two frames a few counts apart differ by far more than JPEG's rounding."""

    def generate(self, source, kp_driving, bg_param=None):
        self.calls["generate"] += 1
        n = self.calls["generate"]
        out = source.image.copy()
        x = 8 + 4 * (n % 50)
        out[4:10, x:x + 4] = (n * 37) % 256
        x = 8 + 12 * (n % 16)
        out[16:28, x:x + 12] = 255 if n % 2 else 0
        return out


# ----------------------------------------------------------------------------- reading MJPEG


class MjpegReader:
    """Reads multipart/x-mixed-replace parts: (X-Sequence, JPEG bytes, time received)."""

    def __init__(self, port: int, path: str = "/stream.mjpg", rcvbuf: int | None = None, host="127.0.0.1"):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.f = self.sock.makefile("rb")
        status = self.f.readline()
        assert b" 200 " in status, status
        headers = {}
        while (line := self.f.readline().strip()):
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        assert headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
        self.boundary = headers["content-type"].split("boundary=")[1]

    def part(self) -> tuple[int, bytes, float]:
        line = self.f.readline().strip()
        while not line:
            line = self.f.readline().strip()
        assert line == f"--{self.boundary}".encode(), line
        headers = {}
        while (line := self.f.readline().strip()):
            k, _, v = line.decode().partition(":")
            headers[k.lower()] = v.strip()
        assert headers["content-type"] == "image/jpeg"
        data = self.f.read(int(headers["content-length"]))
        return int(headers["x-sequence"]), data, time.perf_counter()

    def read_for(self, seconds: float) -> list[tuple[int, bytes, float]]:
        parts, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            parts.append(self.part())
        return parts

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def request(port, method, path, body=None, headers=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def post(port, data, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    return request(port, "POST", "/command", json.dumps(data).encode(), h)


# ----------------------------------------------------------------------------- a live loop serving


class Running:
    """A LivePipeline with --serve, run in a thread until stop()."""

    def __init__(self, opts, backend, **build_kw):
        from splinecam.live.pipeline import LivePipeline

        self.pipe = LivePipeline.build(opts, backend, say=lambda s: None, **build_kw)
        self.port = self.pipe.stream.port
        self.summary = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.summary = self.pipe.run()
        except BaseException as err:  # noqa: BLE001 - reported by stop()
            self.error = err

    def stop(self) -> dict:
        self.pipe.command(Command(Action.QUIT))
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.summary


class CentreDetector:
    """A face in the middle of every frame: keeps the tests' per-frame work small on a busy machine."""

    def detect(self, image):
        from splinecam.engines.faces.geometry import FaceBox

        h, w = image.shape[:2]
        return [FaceBox(w * 0.3, h * 0.25, w * 0.7, h * 0.75, 0.9)]


def clip_pipeline(tmp_path, backend=None, **kw) -> Running:
    """The bundled clip as a camera (its own 25 fps, newest frame wins, looped), the stream on a free port;
    fake face detection and a fake model, so that the loop is fast however busy the machine."""
    from splinecam.engines.faces.tracker import FaceTracker
    from splinecam.live.pipeline import LiveOptions
    from splinecam.live.tracking import FaceCropper

    kw.setdefault("output_size", (640, 360))
    opts = LiveOptions(avatar=str(AVATAR), camera=str(CLIP), camera_size=None, camera_fps=None, realtime=True,
                       loop=True, preview=False, virtual_camera=False, serve=("127.0.0.1", 0), **kw)
    return Running(opts, backend or MarkedBackend(), cropper=FaceCropper(FaceTracker(CentreDetector()), 256))


def test_serve_gives_25_distinct_animated_frames_within_5_s(tmp_path):
    """The floor, with a fast stand-in for the networks: ≥ 25 JPEGs in 5 s, distinct, of the animation."""
    run = clip_pipeline(tmp_path)
    try:
        reader = MjpegReader(run.port)
        parts = reader.read_for(5.0)
        reader.close()
    finally:
        summary = run.stop()
    distinct = {hashlib.sha1(p[1]).hexdigest() for p in parts}
    print(f"within 5 s: {len(parts)} JPEGs, {len(distinct)} distinct; loop {summary.fps}")
    assert len(parts) >= 25 and len(distinct) >= 25, (len(parts), len(distinct), summary.fps)
    seqs = [p[0] for p in parts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    frame = decode(parts[-1][1])
    still = run.pipe.processor.library.current.still
    assert frame.shape == still.shape and np.abs(frame.astype(int) - still).mean() < 8    # the avatar
    s = summary.sections["stream"]
    assert s["viewers_total"] == 1 and s["frames_served"] >= len(parts) and s["viewers_peak"] == 1
    assert summary.frames["output"] >= s["frames_served"]


def test_privacy_and_pass_through_from_the_control_page(tmp_path):
    """The stream gets what the virtual camera gets: the avatar, and the camera only while pass-through is on
    — switched here from the control page, through the hotkeys' queue."""
    from tests.test_live_pipeline import FakeCamera, FakeDetector, FakeVirtualCamera, avatar_dir, is_camera
    from splinecam.engines.faces.tracker import FaceTracker
    from splinecam.live.pipeline import LiveOptions
    from splinecam.live.tracking import FaceCropper

    FakeVirtualCamera.instances = []
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path)), crop="none", preview=False, output_size=(320, 180),
                       fps=30.0, serve=("127.0.0.1", 0))
    run = Running(opts, PassThroughBackend(), source=FakeCamera(period=0.01),
                  cropper=FaceCropper(FaceTracker(FakeDetector()), 256), camera_factory=FakeVirtualCamera)
    def watch():  # a fresh viewer each time: what a viewer's own socket buffers held before is not the question
        reader = MjpegReader(run.port)
        parts = reader.read_for(1.0)
        reader.close()
        return parts
    try:
        before = watch()
        status, body = post(run.port, {"action": "passthrough", "value": True})
        assert status == 202 and json.loads(body)["queued"] == "pass-through"
        time.sleep(0.3)
        during = watch()
        state = json.loads(request(run.port, "GET", "/state")[1])
        assert state["passthrough"] is True
        assert post(run.port, {"action": "passthrough", "value": False})[0] == 202
        assert post(run.port, {"action": "passthrough", "value": False})[0] == 202   # off stays off (no toggle)
        time.sleep(0.3)
        after = watch()
    finally:
        summary = run.stop()
    assert before and not any(is_camera(decode(p[1])) for p in before)
    assert during and is_camera(decode(during[-1][1]))
    assert after and not any(is_camera(decode(p[1])) for p in after)
    vcam = FakeVirtualCamera.instances[0].frames
    assert any(is_camera(f) for f in vcam) and not is_camera(vcam[-1])   # the same rule, the same frames
    assert summary.sections["stream"]["control_requests"] == 3


def test_control_commands_are_the_hotkeys(tmp_path):
    assert command_from_request({"action": "avatar", "value": 2}) == Command(Action.SELECT_AVATAR, 2)
    assert command_from_request({"action": "calibrate"}) == Command(Action.CALIBRATE)
    assert command_from_request({"action": "find_best"}) == Command(Action.FIND_BEST)
    assert command_from_request({"action": "smoothing", "value": False}) == Command(Action.SMOOTHING, 0)
    assert command_from_request({"action": "passthrough", "value": True}) == Command(Action.PASSTHROUGH, 1)
    for bad in ({"action": "passthrough"}, {"action": "passthrough", "value": "yes"}, {"action": "quit"},
                {"action": "avatar", "value": -1}, ["calibrate"], {"action": "avatar", "value": True}):
        with pytest.raises(ControlError):
            command_from_request(bad)
    from tests.test_live_pipeline import FakeCamera, build

    pipe, _, _ = build(tmp_path, FakeCamera(n=5, live=False, fps=25.0), n_avatars=3)
    proc = pipe.processor
    for cmd, check in [(Command(Action.PASSTHROUGH, 0), lambda: not proc.controls.passthrough),
                       (Command(Action.PASSTHROUGH, 1), lambda: proc.controls.passthrough),
                       (Command(Action.PASSTHROUGH, 1), lambda: proc.controls.passthrough),     # on stays on
                       (Command(Action.PASSTHROUGH), lambda: not proc.controls.passthrough),    # the key toggles
                       (Command(Action.SMOOTHING, 0), lambda: not proc.controls.smoothing),
                       (Command(Action.SMOOTHING, 0), lambda: not proc.controls.smoothing),
                       (Command(Action.SELECT_AVATAR, 2), lambda: proc.library.index == 2)]:
        pipe.command(cmd)                 # as the control page does
        assert pipe.apply_commands(0.0) == 1  # as the processing thread does between two frames
        assert check()
    state = pipe.control_state()          # what the page reads: the view published after the commands
    assert state["avatars"] == ["a0", "a1", "a2"] and state["avatar"] == 2 and state["smoothing"] is False
    proc.close()


# ----------------------------------------------------------------------------- viewers


def noisy_frames(size=(640, 360)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)   # noise: big JPEGs, buffers fill fast
    i = 0
    while True:
        i += 1
        yield OutputFrame(np.roll(base, i, axis=1), time.perf_counter(), "avatar", i)


class CountingSink:
    name = "counting"

    def __init__(self):
        self.n = 0

    def send(self, frame):
        self.n += 1

    def close(self):
        pass


class TimedStream(StreamServer):
    """Records how long the sender spends handing each frame to the stream."""

    def send(self, frame):
        t0 = time.perf_counter()
        super().send(frame)
        self.send_max = max(getattr(self, "send_max", 0.0), time.perf_counter() - t0)


def test_slow_stuck_vanishing_and_second_viewers_never_stall_the_sender():
    from splinecam.live.metrics import LiveMetrics

    fps, seconds = 30.0, 6.0
    stream = TimedStream("127.0.0.1", 0, write_timeout=1.5, send_buffer=64 * 1024)
    counting, metrics = CountingSink(), LiveMetrics()
    frames = noisy_frames()
    sender = SteadySender(SinkFanout([stream, counting], metrics), fps, next(frames)).start()
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            sender.publish(next(frames))
            time.sleep(1.0 / fps)
    threading.Thread(target=produce, daemon=True).start()
    results = {}

    def fast():
        r = MjpegReader(stream.port)
        results["fast"] = r.read_for(seconds - 1.0)
        r.close()

    def slow():  # reads a frame every half second
        r = MjpegReader(stream.port, rcvbuf=32 * 1024)
        got = []
        end = time.perf_counter() + seconds - 1.0
        while time.perf_counter() < end:
            got.append(r.part())
            time.sleep(0.5)
        results["slow"] = got
        r.close()

    def stuck():  # connects and never reads again: dropped after write_timeout
        r = MjpegReader(stream.port, rcvbuf=32 * 1024)
        time.sleep(seconds)
        r.close()

    def vanishing():  # reads two frames and hangs up, twice
        for _ in range(2):
            r = MjpegReader(stream.port)
            r.part(), r.part()
            r.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=f, daemon=True) for f in (fast, slow, stuck, vanishing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    elapsed = time.perf_counter() - t0
    stop.set()
    sender.stop()
    time.sleep(0.3)
    report = stream.report()
    stream.close()

    assert counting.n >= 0.7 * fps * elapsed, (counting.n, elapsed)           # the sender kept its pace
    # and never waited on a viewer: waiting on the stuck one would take write_timeout (1.5 s); a tenth of that
    # leaves room for a loaded machine's scheduling (a flake at 0.05 s under load ~5 on 2 cores)
    assert stream.send_max < 0.15, stream.send_max
    fast_parts, slow_parts = results["fast"], results["slow"]
    assert len(fast_parts) >= 0.5 * fps * (seconds - 1.0), len(fast_parts)     # a second viewer is unaffected
    slow_seqs = [p[0] for p in slow_parts]
    gaps = np.diff(slow_seqs)
    assert np.median(gaps) >= 5, slow_seqs                                      # the slow one skips frames …
    # … and gets a recent one, not a backlog: behind the fast viewer by about what it missed while it slept
    # (the frame it gets was the newest when it last finished reading; socket buffers hold a part or so),
    # and that lag does not grow — a queue would add 15 frames at every read, so over the ~10 reads it would
    # pass 2 reads' worth by the third. One part left in the socket buffers shifts the lag by one read, for a
    # read or for the rest of the run (seen in full-suite runs: 15, 29, 15 …; 15, 15, 28, 28, 28): allowed, once
    lag = [max(s for s, _, t in fast_parts if t <= ts) - seq for seq, _, ts in slow_parts
           if any(t <= ts for _, _, t in fast_parts)]
    per_read = fps * 0.5
    assert max(lag[1:]) <= 2 * per_read + 6 and lag[-1] - min(lag[1:]) <= per_read + 6, lag
    assert report["viewers_total"] == 5 and report["viewers_peak"] >= 3
    assert report["viewers_dropped"] >= 1 and report["frames_skipped"] > 0
    assert report["viewers_now"] == 0 and report["frames_served"] >= len(fast_parts) + len(slow_parts)


def test_no_viewer_means_no_encoding_and_a_late_viewer_gets_a_fresh_frame():
    stream = StreamServer("127.0.0.1", 0)

    def flat(v):
        return OutputFrame(np.full((36, 64, 3), v, np.uint8), time.perf_counter(), "avatar")
    try:
        for v in range(0, 100, 10):
            stream.send(flat(v))
        time.sleep(0.2)
        assert stream.report()["frames_encoded"] == 0                 # nobody watching: no work
        r = MjpegReader(stream.port)
        first = r.part()
        assert abs(int(decode(first[1]).mean()) - 90) <= 2            # the newest frame, at once
        stream.send(flat(200))
        assert abs(int(decode(r.part()[1]).mean()) - 200) <= 2
        r.close()
        time.sleep(0.3)
        stream.send(flat(50))                                         # nobody watching again …
        r = MjpegReader(stream.port)
        assert abs(int(decode(r.part()[1]).mean()) - 50) <= 2         # … a new viewer never gets the old 200
        r.close()
    finally:
        stream.close()


def test_a_viewer_that_joins_before_the_first_frame_gets_it():
    """The page's viewer can connect before the loop sends anything (a slow start-up, a loaded machine): the
    encoder must wait for a frame — it used to try to encode None, and its thread died with the stream (seen once
    in CI, as a timed-out read in the pass-through test)."""
    stream = StreamServer("127.0.0.1", 0)
    try:
        r = MjpegReader(stream.port)
        deadline = time.monotonic() + 5
        while stream.viewers == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.viewers == 1
        time.sleep(0.3)                                               # the encoder has looked, found no frame
        stream.send(OutputFrame(np.full((36, 64, 3), 120, np.uint8), time.perf_counter(), "avatar"))
        assert abs(int(decode(r.part()[1]).mean()) - 120) <= 2
        r.close()
    finally:
        stream.close()


# ----------------------------------------------------------------------------- who may ask


def test_state_changes_from_other_origins_are_refused(tmp_path):
    run = clip_pipeline(tmp_path, PassThroughBackend())
    p = run.port
    try:
        assert post(p, {"action": "passthrough", "value": True}, {"Origin": "http://evil.example"})[0] == 403
        assert post(p, {"action": "passthrough", "value": True}, {"Origin": "null"})[0] == 403
        assert post(p, {"action": "passthrough", "value": True}, {"Sec-Fetch-Site": "cross-site"})[0] == 403
        assert post(p, {"action": "passthrough", "value": True}, {"Host": "evil.example:80"})[0] == 403  # rebinding
        form = request(p, "POST", "/command", b"action=passthrough", {"Content-Type": "text/plain"})
        assert form[0] == 415                                       # what a plain cross-site form could send
        assert request(p, "GET", "/command?action=passthrough&value=true")[0] == 404   # GET changes nothing
        assert request(p, "OPTIONS", "/command", headers={"Origin": "http://evil.example"})[0] == 405
        assert request(p, "GET", "/state", headers={"Host": "evil.example"})[0] == 403
        time.sleep(0.3)
        assert json.loads(request(p, "GET", "/state")[1])["passthrough"] is False
        same = post(p, {"action": "smoothing", "value": False},
                    {"Origin": f"http://127.0.0.1:{p}", "Sec-Fetch-Site": "same-origin"})
        assert same[0] == 202
        assert post(p, {"action": "warp-drive"})[0] == 400
        page = request(p, "GET", "/control")[1].decode()
        assert "passthrough" in page and "/stream.mjpg" in page and "TOKEN = \"\"" in page
        viewer = request(p, "GET", "/")[1].decode()
        assert '<img src="/stream.mjpg"' in viewer and "<button" not in viewer        # the stream, nothing else
    finally:
        summary = run.stop()
    assert summary.sections["stream"]["refused_requests"] >= 7


def test_other_machines_need_the_token(tmp_path, monkeypatch):
    import splinecam.live.stream_server as ss

    monkeypatch.setattr(ss, "_is_loopback", lambda host: False)     # every peer counts as another machine
    run = clip_pipeline(tmp_path, PassThroughBackend(), serve_token="s3cret")
    p = run.port
    try:
        assert request(p, "GET", "/")[0] == 401
        assert request(p, "GET", "/stream.mjpg")[0] == 401
        assert request(p, "GET", "/state?token=wrong")[0] == 401
        assert post(p, {"action": "smoothing", "value": False})[0] == 401
        status, page = request(p, "GET", "/?token=s3cret")
        assert status == 200 and '/stream.mjpg?token=s3cret' in page.decode()
        assert request(p, "GET", "/state", headers={"X-Splinecam-Token": "s3cret"})[0] == 200
        assert post(p, {"action": "smoothing", "value": False}, {"X-Splinecam-Token": "s3cret"})[0] == 202
        r = MjpegReader(p, "/stream.mjpg?token=s3cret")
        assert r.part()[1][:2] == b"\xff\xd8"
        r.close()
    finally:
        run.stop()


def test_cli_serve_beyond_localhost_is_said_and_needs_a_token(monkeypatch):
    from splinecam.live.commands import _serve_token
    from splinecam.live.pipeline import LiveOptions

    said = []
    out = _serve_token(LiveOptions(avatar="x", serve=("0.0.0.0", 8080)), said.append)
    assert out.serve_token and len(said) == 1 and "beyond this machine" in said[0] and out.serve_token in said[0]
    said.clear()
    out = _serve_token(LiveOptions(avatar="x", serve=("0.0.0.0", 8080), serve_token="given"), said.append)
    assert out.serve_token == "given" and "given" not in said[0]
    said.clear()
    assert _serve_token(LiveOptions(avatar="x", serve=("127.0.0.1", 8080)), said.append).serve_token is None
    assert not said


# ----------------------------------------------------------------------------- a real browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, out: Path, size=(640, 360)) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="splinecam-chromium-") as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--screenshot={out}", url], capture_output=True, timeout=90, check=True)
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert img is not None, f"chromium wrote no screenshot to {out}"
    return img[..., ::-1]


@pytest.mark.skipif(chromium() is None, reason="no chromium here (apt-get install chromium): the browser check "
                                               "of the stream page cannot run")
def test_chromium_shows_the_avatar_on_the_page_and_it_moves(tmp_path):
    run = clip_pipeline(tmp_path)
    try:
        url = f"http://127.0.0.1:{run.port}/"
        first = screenshot(url, tmp_path / "a.png")
        later = []
        for i in range(3):  # two shots may land on frames whose markers coincide (every 16th): up to three tries
            time.sleep(0.7)
            later.append(screenshot(url, tmp_path / f"b{i}.png"))
            if np.abs(first.astype(int) - later[-1].astype(int)).max() > 100:
                break
    finally:
        run.stop()
    still = cv2.resize(run.pipe.processor.library.current.still, (first.shape[1], first.shape[0]),
                       interpolation=cv2.INTER_AREA).astype(int)
    for shot in (first, *later):
        assert shot.std() > 20                                                   # a picture, not a blank page
        assert np.abs(shot.astype(int) - still).mean() < 12                      # the avatar, full-window
    moved = [int(np.abs(first.astype(int) - s.astype(int)).max()) for s in later]
    assert max(moved) > 100, moved                                               # and it moved


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium here (apt-get install chromium): the browser check "
                                               "of the stream page cannot run")
def test_cli_serve_with_a_real_model(shared, tmp_path):
    """`splinecam live … --serve` as a user runs it (a real, small network): ≥ 25 JPEGs within 5 s of reading,
    the animation among them, and headless chromium shows it on /."""
    from tests.test_live_pipeline import golden_args

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "GLOG_minloglevel": "2", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen([sys.executable, "-m", "splinecam", "live", "--camera", str(CLIP), "--realtime", "--loop",
                             "--avatar", str(AVATAR), "--no-preview", "--no-virtual-camera", "--serve",
                             f"127.0.0.1:{port}", "--metrics", str(tmp_path / "m.json"), *golden_args(shared)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if request(port, "GET", "/state")[0] == 200:
                    break
            except OSError:
                time.sleep(0.5)
        time.sleep(3.0)                       # past start-up: the animation is running
        reader = MjpegReader(port)
        parts = reader.read_for(5.0)
        reader.close()
        shots = [screenshot(f"http://127.0.0.1:{port}/", tmp_path / "a.png")]
        moved = 0                             # the largest pixel change between any two screenshots so far
        for i in range(6):                    # a second apart, until the picture moved (≤ 6 tries): each new one
            time.sleep(1.0)                   # against every earlier one, so a still moment of the clip between
            shots.append(screenshot(f"http://127.0.0.1:{port}/", tmp_path / f"b{i}.png"))   # two shots is not a stall
            moved = max(moved, *(int(np.abs(shots[-1].astype(int) - s.astype(int)).max()) for s in shots[:-1]))
            if moved > 40:
                break
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err        # stopped by SIGTERM: 128 + 15 (#15)
    assert "stream on http://127.0.0.1:" in out and "Browser Source" in out
    distinct = {hashlib.sha1(p[1]).hexdigest() for p in parts}
    m = json.loads((tmp_path / "m.json").read_text())
    assert len(parts) >= 25 and len(distinct) >= 2, (len(parts), len(distinct), m["fps"])
    assert all(s.std() > 20 for s in shots)
    assert moved > 40, f"screenshots 1–6 s apart differ (largest pixel change {moved})"
    assert m["stream"]["viewers_total"] >= 3 and m["stream"]["frames_served"] >= len(parts)


def test_a_port_in_use_is_one_line_before_any_sink_opens(tmp_path):
    from splinecam.engines.errors import SplinecamError
    from splinecam.live.pipeline import LiveOptions, LivePipeline
    from tests.test_live_pipeline import FakeCamera, FakeDetector, avatar_dir
    from splinecam.engines.faces.tracker import FaceTracker
    from splinecam.live.tracking import FaceCropper

    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path)), crop="none", preview=False, virtual_camera=False,
                       output_size=(320, 180), record=tmp_path / "r.mp4", serve=("127.0.0.1", port))
    try:
        with pytest.raises(SplinecamError, match=f"--serve 127.0.0.1:{port}: cannot listen") as err:
            LivePipeline.build(opts, PassThroughBackend(), source=FakeCamera(n=5, live=False, fps=25.0),
                               cropper=FaceCropper(FaceTracker(FakeDetector()), 256), say=lambda s: None)
        assert "\n" not in str(err.value) and not (tmp_path / "r.mp4").exists()
    finally:
        taken.close()
