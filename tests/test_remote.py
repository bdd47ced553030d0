"""The remote worker (engines/remote): protocol, authentication, bad input over the wire, a worker that
goes away and comes back during a live run, and the command line (worker + live --remote)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from splinecam.engines.errors import BackendOffline
from splinecam.engines.remote import protocol as P
from splinecam.engines.remote.client import RemoteBackend, WorkerError
from splinecam.engines.remote.worker import WorkerServer, token_proof
from splinecam.live.passthrough import PassThroughBackend

TOKEN = "correct-horse-battery"


class ShiftBackend(PassThroughBackend):
    """A fast fake model whose frame depends on the keypoints (so a wrong or stale kp shows)."""

    def generate(self, source, kp_driving, bg_param=None):
        shift = int(round(float(np.asarray(kp_driving).mean()) * 1000)) % self.size
        self.calls["generate"] += 1
        return np.roll(source.image, shift, axis=1)


@pytest.fixture
def worker():
    server = WorkerServer(ShiftBackend(), TOKEN, "127.0.0.1", 0, hello_timeout=2.0).start()
    yield server
    server.close()


def rand_image(seed=0, size=256):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def raw_connect(server) -> tuple[socket.socket, P.Message]:
    sock = socket.create_connection(server.address, timeout=5)
    return sock, P.recv_message(sock)


def hello(sock, greeting, token=TOKEN, **meta):
    nonce = bytes.fromhex(greeting.meta["nonce"])
    sock.sendall(P.pack(P.HELLO, {"auth": token_proof(token, nonce), "codec": "raw", "quality": 90, **meta}))
    return P.recv_message(sock)


# ----------------------------------------------------------------------------- protocol


def test_messages_round_trip_arrays_and_images():
    kp = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    img = rand_image()
    data = P.pack(P.GENERATE, {"id": 3}, [P.Blob("kp", kp), P.Blob("raw", img), P.Blob("png", img, "png")])
    version, kind, meta_len, payload_len = P.parse_header(data[:P.HEADER.size])
    msg = P.decode(kind, data[16:16 + meta_len], data[16 + meta_len:])
    assert (version, kind, msg.meta) == (P.VERSION, P.GENERATE, {"id": 3}) and len(data) == 16 + meta_len + payload_len
    np.testing.assert_array_equal(msg.arrays["kp"], kp)
    np.testing.assert_array_equal(msg.arrays["raw"], img)
    np.testing.assert_array_equal(msg.arrays["png"], img)            # lossless
    jpeg = P.pack(P.FRAME, {}, [P.Blob("image", img, "jpeg", 90)])
    assert len(jpeg) < img.nbytes                                     # the codec pays on the wire


def test_parse_address():
    assert P.parse_address("7860") == ("127.0.0.1", 7860)
    assert P.parse_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert P.parse_address("[::1]:9") == ("::1", 9)
    with pytest.raises(ValueError, match="HOST"):
        P.parse_address("gpu-box")
    assert P.is_loopback("127.0.0.1") and P.is_loopback("::1") and not P.is_loopback("0.0.0.0")


# ----------------------------------------------------------------------------- the backend over the wire


def test_remote_backend_matches_the_local_one_and_counts_what_crosses(worker):
    local = ShiftBackend()
    remote = RemoteBackend(*worker.address, TOKEN, codec="raw")
    try:
        assert remote.size == 256 and remote.config.num_kp == 50 and not remote.has_avd
        assert "remote worker" in remote.describe() and remote.keypoints_where.startswith("worker")
        avatar, crop = rand_image(1), rand_image(2)
        s_local, s_remote = local.prepare_source(avatar), remote.prepare_source(avatar)
        np.testing.assert_array_equal(s_remote.kp, s_local.kp)
        for i in range(5):
            frame = np.clip(crop.astype(int) + 7 * i, 0, 255).astype(np.uint8)
            kp_l, kp_r = local.keypoints(frame), remote.keypoints(frame)
            np.testing.assert_array_equal(kp_r, kp_l)
            np.testing.assert_array_equal(remote.generate(s_remote, kp_r), local.generate(s_local, kp_l))
        report = remote.report()
        assert report["frames_generated"] == 5 == worker.counts["frames_generated"]   # counted by the worker
        assert report["requests"] == {"prepare": 1, "keypoints": 5, "generate": 5, "avd": 0}
        per = report["bytes_per_request"]
        assert per["keypoints"]["sent"] > 256 * 256 * 3 and per["generate"]["sent"] < 1024   # crop up; kp up
        assert per["generate"]["received"] > 256 * 256 * 3                                     # raw frame back
        rt, net = report["round_trip_ms"], report["network_ms"]
        assert rt["mean"] > 0 and 0 <= net["mean"] <= rt["mean"] and report["inference_ms"] <= report["worker_ms"]
    finally:
        remote.close()


def test_jpeg_on_the_wire_is_smaller_and_close(worker, shared):
    import cv2

    from splinecam.engines.faces.detection import find_face
    from splinecam.engines.faces.geometry import crop_box_for_face, crop_image
    from splinecam.engines.media import read_image

    pic = read_image(shared / "data" / "avatars" / "mona.jpg")
    face = cv2.resize(crop_image(pic, crop_box_for_face(find_face(pic, "mona")), 256), (256, 256))
    remote = RemoteBackend(*worker.address, TOKEN, codec="jpeg", quality=90)
    try:
        state = remote.prepare_source(face)
        out = remote.generate(state, np.zeros((50, 2), np.float32))
        assert np.abs(out.astype(int) - face.astype(int)).mean() < 4     # JPEG q90 of the same picture
        assert remote.report()["bytes_per_frame"]["received"] < face.nbytes / 4
    finally:
        remote.close()


def test_landmark_model_sends_keypoints_not_the_crop(shared):
    """A model whose keypoints are face-mesh landmarks: the mesh runs on the client, ~0.5 KB goes up a frame."""
    from splinecam.engines.backends.base import Backend
    from splinecam.engines.faces.detection import find_face
    from splinecam.engines.faces.geometry import crop_box_for_face, crop_image
    from splinecam.engines.media import read_image
    from splinecam.engines.tpsmm.config import load_config
    from splinecam.live.passthrough import PassThroughGraphs

    config = load_config("cpu-256")
    assert config.landmark_keypoints
    server = WorkerServer(Backend(config, PassThroughGraphs(config.num_kp)), TOKEN, "127.0.0.1", 0).start()
    pic = read_image(shared / "data" / "avatars" / "mona.jpg")
    face = crop_image(pic, crop_box_for_face(find_face(pic, "mona")), 256)
    remote = RemoteBackend(*server.address, TOKEN)
    try:
        assert remote.keypoints_where == "client (face mesh)"
        state = remote.prepare_source(face)
        for _ in range(3):
            remote.generate(state, remote.keypoints(face))
        r = remote.report()
        assert r["requests"]["keypoints"] == 0 and r["frames_generated"] == 3
        assert r["bytes_per_frame"]["sent"] < 1024
    finally:
        remote.close()
        server.close()


# ----------------------------------------------------------------------------- authentication


def test_wrong_or_missing_token_is_refused_logged_and_the_worker_goes_on(worker, caplog):
    caplog.set_level(logging.INFO, logger="splinecam.worker")
    with pytest.raises(WorkerError) as err:
        RemoteBackend(*worker.address, "not-the-token")
    line = str(err.value)
    assert "\n" not in line and "wrong token" in line and "not-the-token" not in line and TOKEN not in line
    with pytest.raises(WorkerError, match="no token"):
        RemoteBackend(*worker.address, "")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logged and "wrong token" in logged and "no token" in logged
    assert TOKEN not in logged and "not-the-token" not in logged                # the token is never logged
    good = RemoteBackend(*worker.address, TOKEN)                                 # still serving
    good.prepare_source(rand_image())
    good.close()
    assert worker.counts["refused"] == 2


def test_a_token_is_never_sent_in_clear(worker):
    sock, greeting = raw_connect(worker)
    nonce = bytes.fromhex(greeting.meta["nonce"])
    assert len(nonce) == 16
    sock.sendall(P.pack(P.HELLO, {"auth": TOKEN, "codec": "raw", "quality": 90}))   # the token itself: refused
    reply = P.recv_message(sock)
    assert reply.kind == P.ERROR and reply.meta["code"] == "auth"
    sock.close()


def test_silent_client_is_dropped(worker):
    sock, _ = raw_connect(worker)
    sock.settimeout(5)
    reply = P.recv_message(sock)                                   # after hello_timeout (2 s here)
    assert reply.kind == P.ERROR and reply.meta["code"] == "auth"


# ----------------------------------------------------------------------------- bad input over the wire


def expect_error(sock, code) -> dict:
    reply = P.recv_message(sock)
    assert reply.kind == P.ERROR and reply.meta["code"] == code, reply.meta
    assert reply.meta["message"] and "\n" not in reply.meta["message"]
    return reply.meta


def closed(sock) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_malformed_messages_get_a_refusal_and_never_crash_the_worker(worker):
    cases = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "malformed", True),                        # another protocol
        (os.urandom(64), "malformed", True),                                                # garbage
        (struct.pack("!4sBBHII", P.MAGIC, P.VERSION, P.HELLO, 0, 10, 1 << 30), "too_large", True),
        (struct.pack("!4sBBHII", P.MAGIC, P.VERSION, P.HELLO, 0, 1 << 20, 0), "too_large", True),
        (P.pack(P.HELLO, {"auth": "x"}, version=P.VERSION + 1), "version", True),          # a newer client
    ]
    for data, code, must_close in cases:
        sock, greeting = raw_connect(worker)
        assert greeting.kind == P.GREETING
        sock.sendall(data)
        meta = expect_error(sock, code)
        if code == "version":
            assert f"v{P.VERSION + 1}" in meta["message"] and "same splinecam version" in meta["message"]
        assert closed(sock) == must_close
        sock.close()

    sock, greeting = raw_connect(worker)          # authenticated, then nonsense: refused, the connection lives
    assert hello(sock, greeting).kind == P.WELCOME
    S, img = 256, rand_image()
    bad = [
        (P.HEADER.pack(P.MAGIC, P.VERSION, P.GENERATE, 0, 5, 0) + b"{nope", "malformed"),         # not JSON
        (P.pack(P.GENERATE, {"id": 0}, [P.Blob("kp", np.zeros((50, 2), np.float32))]), "unknown_source"),
        (P.pack(P.PREPARE, {"id": 0}, [P.Blob("image", img[:100])]), "malformed"),              # wrong shape
        (P.pack(P.PREPARE, {"id": "x"}, [P.Blob("image", img)]), "malformed"),                  # bad id
        (P.pack(99, {}), "malformed"),                                                          # unknown kind
        (P.pack(P.KEYPOINTS, {}, [P.Blob("image", np.zeros((S, S, 3), np.float32))]), "malformed"),  # dtype
        (P.pack_encoded(P.KEYPOINTS, {"blobs": [["image", "jpeg", [S, S, 3], 10]]},
                        P.Encoded([], [b"0123456789"])), "malformed"),                          # not a JPEG
        (P.pack_encoded(P.KEYPOINTS, {"blobs": [["image", "uint8", [S, S, 3], S * S * 3 + 9]]},
                        P.Encoded([], [b"x"])), "malformed"),                                   # past the end
        (P.pack_encoded(P.KEYPOINTS, {"blobs": "no"}, P.Encoded([], [])), "malformed"),
        (P.pack_encoded(P.KEYPOINTS, {"blobs": [["image", "pickle", [1], 1]]}, P.Encoded([], [b"x"])), "malformed"),
        (P.pack(P.AVD, {}, [P.Blob("kp_source", np.zeros((50, 2))), P.Blob("kp_driving", np.zeros((50, 2)))]),
         "refused"),                                                                            # no AVD network
    ]
    for data, code in bad:
        sock.sendall(data)
        expect_error(sock, code)
    sock.sendall(P.pack(P.PREPARE, {"id": 0}, [P.Blob("image", img)]))
    assert P.recv_message(sock).kind == P.PREPARED
    kp = np.zeros((50, 2), np.float32)
    kp[0, 0] = np.nan
    sock.sendall(P.pack(P.GENERATE, {"id": 0}, [P.Blob("kp", kp)]))
    assert "NaN" in expect_error(sock, "malformed")["message"]
    sock.sendall(P.pack(P.GENERATE, {"id": 0}, [P.Blob("kp", np.zeros((50, 2), np.float32))]))
    assert P.recv_message(sock).kind == P.FRAME
    sock.sendall(P.pack(P.GENERATE, {"id": 0})[:20])              # half a message, then gone
    sock.close()

    good = RemoteBackend(*worker.address, TOKEN)                  # and the worker still serves
    state = good.prepare_source(img)
    assert good.generate(state, state.kp).shape == (256, 256, 3)
    good.close()


def test_another_version_of_the_worker_is_named_on_the_client():
    """A worker speaking another protocol version: the client's one-line error says so."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    import threading

    def serve():
        conn, _ = listener.accept()
        conn.sendall(P.pack(P.GREETING, {"nonce": "00" * 16}, version=P.VERSION + 1))
        time.sleep(0.5)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(WorkerError, match=f"v{P.VERSION + 1}.*same splinecam version"):
        RemoteBackend("127.0.0.1", port, TOKEN)
    listener.close()


def test_nothing_listening_is_one_line():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(WorkerError, match="cannot connect") as err:
        RemoteBackend("127.0.0.1", port, TOKEN)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- a worker that goes away


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_vanished_worker_is_retried_every_second_and_the_avatars_sent_again(monkeypatch):
    import splinecam.engines.remote.client as client_mod

    server = WorkerServer(ShiftBackend(), TOKEN, "127.0.0.1", 0).start()
    host, port = server.address
    clock, said = Clock(), []
    remote = RemoteBackend(host, port, TOKEN, codec="raw", clock=clock, say=said.append)
    attempts = []
    real = client_mod.WorkerConnection

    def counting(*a, **kw):
        attempts.append(clock.t)
        return real(*a, **kw)
    monkeypatch.setattr(client_mod, "WorkerConnection", counting)
    try:
        state = remote.prepare_source(rand_image())
        remote.generate(state, state.kp)
        server.close()                                          # the worker goes away
        with pytest.raises(BackendOffline):
            remote.generate(state, state.kp)
        assert any("went away" in s for s in said)
        for step in range(30):                                  # 3 s of frames at 10 per second
            clock.t += 0.1
            with pytest.raises(BackendOffline, match="retrying every 1 s"):
                remote.keypoints(rand_image())
        assert 2 <= len(attempts) <= 4                          # once a second, not once a frame
        server = WorkerServer(ShiftBackend(), TOKEN, host, port).start()   # it comes back, knowing nothing
        clock.t += 1.0
        out = remote.generate(state, state.kp)                   # the avatar is sent again first
        assert out.shape == (256, 256, 3) and any("is back" in s for s in said)
        r = remote.report()
        assert r["sessions"] == 2 and r["connection_lost"] == 1 and r["requests"]["prepare"] == 2
        assert r["frames_generated"] == 2 and r["offline_calls"] >= 30 and r["offline_s"] >= 3.0
    finally:
        remote.close()
        server.close()


def test_live_loop_holds_the_avatar_while_the_worker_is_away_and_carries_on(tmp_path):
    """The live loop over a worker that vanishes mid-run and comes back: the sinks never stall, never see
    the camera, show the avatar at rest while it is away, and the animation resumes."""
    from tests.test_live_pipeline import FakeCamera, FakeDetector, FakeVirtualCamera, avatar_dir, is_camera
    from splinecam.engines.faces.tracker import FaceTracker
    from splinecam.live.pipeline import LiveOptions, LivePipeline
    from splinecam.live.tracking import FaceCropper

    class Darker(PassThroughBackend):
        def generate(self, source, kp_driving, bg_param=None):
            return source.image // 2                               # animated ≠ the still

    server = WorkerServer(Darker(), TOKEN, "127.0.0.1", 0).start()
    host, port = server.address
    remote = RemoteBackend(host, port, TOKEN, codec="raw", retry_s=0.2)
    opts = LiveOptions(avatar=str(avatar_dir(tmp_path)), crop="none", preview=False, output_size=(320, 180),
                       fps=50.0, max_frames=150)
    FakeVirtualCamera.instances = []
    pipe = LivePipeline.build(opts, remote, source=FakeCamera(period=0.01),
                              cropper=FaceCropper(FaceTracker(FakeDetector()), 256),
                              camera_factory=FakeVirtualCamera, say=lambda s: None)
    import threading

    def away_and_back():
        time.sleep(0.8)
        server.close()
        time.sleep(0.8)
        WorkerServer(Darker(), TOKEN, host, port).start()
    t = threading.Thread(target=away_and_back, daemon=True)
    t.start()
    summary = pipe.run()
    t.join()
    remote.close()
    frames = FakeVirtualCamera.instances[0].frames
    still = pipe.processor.library.current.still
    kinds = ["still" if np.array_equal(f, still) else "animated" for f in frames]
    assert len(frames) == 150 and not any(is_camera(f) for f in frames)
    first_anim = kinds.index("animated")
    gap = [i for i in range(first_anim, len(kinds)) if kinds[i] == "still"]
    assert gap, "the avatar at rest while the worker was away"
    assert "animated" in kinds[gap[-1]:], "animated again once the worker was back"
    r = summary.sections["remote"]
    assert r["sessions"] == 2 and r["connection_lost"] == 1 and r["frames_generated"] > 0
    assert summary.frames["backend_offline"] > 0


# ----------------------------------------------------------------------------- the command line


def _splinecam(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "splinecam", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_cli_worker_and_live_remote_record_30_frames(shared, tmp_path):
    """The floor: worker + live --remote records 30 frames of 1280x720 that the worker generated; a wrong
    token exits 2 with one line and the worker stays up."""
    from splinecam.engines.media import VideoReader, count_frames
    from tests.test_live_pipeline import golden_args

    env = {**os.environ, "GLOG_minloglevel": "2"}
    env.pop("SPLINECAM_TOKEN", None)
    model = golden_args(shared)
    worker = _splinecam("worker", "--listen", "127.0.0.1:0", "--token", "T", *model, env=env)
    try:
        port = None
        deadline = time.time() + 180
        while time.time() < deadline and port is None:
            line = worker.stdout.readline()
            assert line, f"the worker ended: {worker.stderr.read()}"
            m = re.search(r"ready on 127\.0\.0\.1:(\d+)", line)
            port = m and int(m.group(1))
        assert port, "no ready line"
        clip = shared / "data" / "clips" / "webcam" / "lp-d12.mp4"
        common = ["live", "--remote", f"127.0.0.1:{port}", "--camera", str(clip), "--avatar",
                  str(shared / "data" / "avatars" / "mona.jpg"), "--no-preview", "--no-virtual-camera",
                  "--no-remember"]
        wrong = subprocess.run([sys.executable, "-m", "splinecam", *common, "--token", "nope", "--max-frames", "1"],
                               capture_output=True, text=True, env=env, timeout=120)
        err = [ln for ln in wrong.stderr.strip().splitlines() if ln.strip()]
        assert wrong.returncode == 2 and len(err) == 1 and "refused the token" in err[0] and "nope" not in err[0]
        assert worker.poll() is None                                         # still up
        out, metrics = tmp_path / "out.mp4", tmp_path / "m.json"
        ok = subprocess.run([sys.executable, "-m", "splinecam", *common, "--token", "T", "--record", str(out),
                             "--max-frames", "30", "--metrics", str(metrics)],
                            capture_output=True, text=True, env=env, timeout=600)
        assert ok.returncode == 0, ok.stderr
        assert count_frames(out) == 30 and VideoReader(out).size == (1280, 720)
        m = json.loads(metrics.read_text())
        assert m["backend"] == "remote" and m["remote"]["frames_generated"] == 30 == m["frames"]["processed"]
        assert m["remote"]["network_ms"]["mean"] is not None and m["remote"]["inference_ms"] > 0
    finally:
        worker.terminate()
        _, werr = worker.communicate(timeout=30)
    assert "refused" in werr and "wrong token" in werr and "nope" not in werr and "left after 30 frames" in werr


def test_a_worker_that_stops_answering_counts_as_gone():
    """A worker that hangs (stopped process, dead link without a reset): no reply within the timeout →
    offline at once for the following calls, not a frozen loop."""
    class Hanging(ShiftBackend):
        def generate(self, source, kp_driving, bg_param=None):
            if self.calls["generate"] >= 1:
                time.sleep(3.0)
            return super().generate(source, kp_driving, bg_param)

    server = WorkerServer(Hanging(), TOKEN, "127.0.0.1", 0).start()
    remote = RemoteBackend(*server.address, TOKEN, reply_timeout=0.5, retry_s=10.0, say=lambda s: None)
    try:
        state = remote.prepare_source(rand_image())
        remote.generate(state, state.kp)
        t0 = time.perf_counter()
        with pytest.raises(BackendOffline):
            remote.generate(state, state.kp)
        waited = time.perf_counter() - t0
        assert waited < 2.5, waited                                 # the timeout, not the worker's 3 s
        t0 = time.perf_counter()
        with pytest.raises(BackendOffline):
            remote.generate(state, state.kp)                        # offline now: at once, no waiting
        assert time.perf_counter() - t0 < 0.1 and not remote.online
    finally:
        remote.close()
        server.close()


def test_image_headers_are_checked_before_decoding(worker):
    """A small file announcing a huge picture (a decompression bomb) is refused without decoding it, and
    nothing with a payload is even read before the token is checked."""
    import cv2

    img = rand_image(size=64)
    for codec in ("jpeg", "png"):
        data = P.encode_image(img, codec)
        assert P.image_size(data, codec) == (64, 64)
    big = cv2.imencode(".jpg", np.zeros((4000, 4000, 3), np.uint8))[1].tobytes()
    with pytest.raises(P.ProtocolError, match="announced"):
        P.decode_image(big, (256, 256, 3))
    sock, greeting = raw_connect(worker)
    hello_with_payload = P.pack(P.HELLO, {"auth": "x"}, [P.Blob("image", img, "jpeg")])
    sock.sendall(hello_with_payload)
    assert expect_error(sock, "too_large") and closed(sock)
    sock, greeting = raw_connect(worker)
    assert hello(sock, greeting).kind == P.WELCOME
    sock.sendall(P.pack_encoded(P.KEYPOINTS, {"blobs": [["image", "jpeg", [256, 256, 3], len(big)]]},
                                P.Encoded([], [big])))
    assert "announced" in expect_error(sock, "malformed")["message"]
    sock.close()


def test_bench_pipeline_remote_splits_the_round_trip_and_counts_bytes(worker, tmp_path, monkeypatch, capsys):
    from splinecam.cli import main
    from tests.conftest import REPO

    out = tmp_path / "bench.json"
    host, port = worker.address
    argv = ["bench", "--pipeline", str(REPO / "live" / "assets" / "webcam.mp4"), "--remote", f"{host}:{port}",
            "--token", TOKEN, "--frames", "40", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["splinecam", *argv])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "round trip per frame mean" in text and "B sent" in text
    data = json.loads(out.read_text())
    (p,) = data["pipeline"]
    r = p["remote"]
    assert p["backend"] == "remote" and r["frames_generated"] == worker.counts["frames_generated"] > 0
    assert r["bytes_per_frame"]["sent"] > 0 and r["bytes_per_frame"]["received"] > 0
    assert r["round_trip_ms"]["mean"] >= r["network_ms"]["mean"] >= 0
    assert TOKEN not in out.read_text() and "--token TOKEN" in data["command"]
