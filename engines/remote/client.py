"""The client side of the remote worker: a :class:`Backend` whose networks run on another machine.

    backend = RemoteBackend("gpu-box", 7860, token)        # connects, authenticates, learns the model
    state = backend.prepare_source(avatar_256)              # the avatar crosses the wire once
    kp = backend.keypoints(crop)                            # face mesh here (landmark models), or the crop
    frame = backend.generate(state, kp_norm)                # keypoints up, the frame back (JPEG by default)

Where the split is: everything the live loop does around the networks stays on the laptop (capture,
tracking, smoothing, normalisation, composition, sinks); the worker runs the networks and the host step
that feeds them (the TPS solve). For a model whose keypoints are face-mesh landmarks
(``kp_detector_params.head: landmarks``), the mesh runs here and only keypoints go up — about 0.5 KB per
frame; for a model with a keypoint network, the 256×256 face crop goes up too (one more round trip).
The generated S×S frame comes back as JPEG (``codec``/``quality``; ``png`` or ``raw`` for exact frames).

One request is in flight at a time and the live loop asks for a frame only when it has one to drive, so
frames never queue on the wire: the capture thread keeps only the newest frame meanwhile.

A worker that goes away (connection lost, no reply within the timeout): :class:`BackendOffline` is raised
at once for every call, and the connection is re-tried at most every ``retry_s`` seconds; the live loop
shows the avatar at rest meanwhile. When the worker is back, the avatars are sent again (lazily, at their
next frame) and the run carries on. A worker that comes back with another model is not used.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from splinecam.engines.backends.base import Backend, GraphRunner, SourceState, image_to_nchw, nchw_to_image
from splinecam.engines.errors import BackendOffline, BackendUnavailableError, SplinecamError
from splinecam.engines.remote import protocol as P
from splinecam.engines.remote.protocol import splinecam_version
from splinecam.engines.remote.worker import token_proof

log = logging.getLogger("splinecam.remote")

CODECS = ("jpeg", "png", "raw")


class WorkerError(SplinecamError):
    """The worker cannot be used: unreachable at start, wrong token, another protocol version …"""


@dataclass
class RemoteSource:
    """What the client keeps of an avatar: its id on the worker and its image (to send again after a
    reconnect)."""

    id: int
    image: np.ndarray


class _Stats:
    """Thread-safe accumulators for the ``remote`` section of the live metrics."""

    KINDS = ("prepare", "keypoints", "generate", "avd")

    def __init__(self):
        self.lock = threading.Lock()
        self.n = {k: 0 for k in self.KINDS}
        self.rtt = {k: 0.0 for k in self.KINDS}
        self.worker = {k: 0.0 for k in self.KINDS}
        self.infer = {k: 0.0 for k in self.KINDS}
        self.sent = {k: 0 for k in self.KINDS}
        self.received = {k: 0 for k in self.KINDS}
        self.codec_s = 0.0
        self.frame_rtt: list[float] = []        # per generated frame: the round trips of its requests (s)
        self.frame_network: list[float] = []
        self._pending_rtt = 0.0
        self._pending_net = 0.0
        self.generated_before = 0               # frames generated on earlier connections (as the worker said)
        self.generated_now = 0                  # on this connection
        self.sessions = 0
        self.lost = 0
        self.offline_s = 0.0
        self.offline_calls = 0
        self.worker_errors = 0

    def request(self, kind: str, rtt: float, worker_ms: float, infer_ms: float, sent: int, received: int) -> None:
        with self.lock:
            self.n[kind] += 1
            self.rtt[kind] += rtt
            self.worker[kind] += worker_ms / 1000.0
            self.infer[kind] += infer_ms / 1000.0
            self.sent[kind] += sent
            self.received[kind] += received
            if kind != "prepare":
                self._pending_rtt += rtt
                self._pending_net += max(0.0, rtt - worker_ms / 1000.0)
            if kind == "generate":
                if len(self.frame_rtt) < 100_000:
                    self.frame_rtt.append(self._pending_rtt)
                    self.frame_network.append(self._pending_net)
                self._pending_rtt = self._pending_net = 0.0

    def codec(self, seconds: float) -> None:
        with self.lock:
            self.codec_s += seconds

    def summary(self) -> dict:
        def ms(x: float) -> float:
            return round(x * 1000.0, 3)

        with self.lock:
            frames = self.n["generate"]
            per_frame = ("keypoints", "generate", "avd")
            rtt = np.asarray(self.frame_rtt, np.float64) * 1000.0
            net = np.asarray(self.frame_network, np.float64) * 1000.0

            def pct(a: np.ndarray) -> dict:
                if not a.size:
                    return {"mean": None, "p50": None, "p95": None}
                return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
                        "p95": round(float(np.percentile(a, 95)), 3)}

            f = max(1, frames)
            return {
                "frames_generated": self.generated_before + self.generated_now,
                "frames_requested": frames,
                "requests": dict(self.n),
                "round_trip_ms": pct(rtt),
                "network_ms": pct(net),
                "worker_ms": ms(sum(self.worker[k] for k in per_frame) / f) if frames else None,
                "inference_ms": ms(sum(self.infer[k] for k in per_frame) / f) if frames else None,
                "client_codec_ms": ms(self.codec_s / f) if frames else None,
                "bytes_per_frame": {"sent": round(sum(self.sent[k] for k in per_frame) / f) if frames else None,
                                    "received": round(sum(self.received[k] for k in per_frame) / f)
                                    if frames else None},
                "bytes_per_request": {k: {"sent": round(self.sent[k] / self.n[k]),
                                          "received": round(self.received[k] / self.n[k])}
                                      for k in self.KINDS if self.n[k]},
                "bytes_total": {"sent": sum(self.sent.values()), "received": sum(self.received.values())},
                "sessions": self.sessions,
                "connection_lost": self.lost,
                "offline_s": round(self.offline_s, 3),
                "offline_calls": self.offline_calls,
                "worker_errors": self.worker_errors,
            }


class WorkerConnection:
    """One authenticated connection to a worker. ``info``: the worker's WELCOME (its model)."""

    def __init__(self, host: str, port: int, token: str, codec: str = "jpeg", quality: int = 90,
                 timeout: float = 5.0):
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise WorkerError(f"--remote {self.address}: no answer within {timeout:g} s (is the worker running, "
                              f"and the port open?)") from None
        except OSError as err:
            raise WorkerError(f"--remote {self.address}: cannot connect ({err.strerror or type(err).__name__}): "
                              f"start `splinecam worker` there, or check the address") from None
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.info = self._handshake(token, codec, quality)
        except BaseException:
            self.close()
            raise
        self.sock.settimeout(None)

    def _handshake(self, token: str, codec: str, quality: int) -> dict:
        try:
            greeting = P.recv_message(self.sock)
        except socket.timeout:
            raise WorkerError(f"--remote {self.address} did not greet like a splinecam worker (is it one?)") from None
        except P.ProtocolError as err:
            raise WorkerError(f"--remote {self.address}: {err}") from None
        except (P.ConnectionClosed, OSError):
            raise WorkerError(f"--remote {self.address} closed the connection before greeting "
                              f"(is it a splinecam worker?)") from None
        if greeting.kind == P.ERROR:
            raise WorkerError(f"the worker at {self.address} refused the connection: "
                              f"{str(greeting.meta.get('message', '?'))[:200]}")
        nonce = greeting.meta.get("nonce")
        if greeting.kind != P.GREETING or not isinstance(nonce, str):
            raise WorkerError(f"--remote {self.address} did not greet like a splinecam worker")
        try:
            proof = token_proof(token, bytes.fromhex(nonce)) if token else ""
        except ValueError:
            raise WorkerError(f"--remote {self.address} sent a malformed greeting") from None
        self.sock.sendall(P.pack(P.HELLO, {"auth": proof, "client": splinecam_version(), "codec": codec,
                                           "quality": int(quality)}))
        try:
            reply = P.recv_message(self.sock)
        except P.ProtocolError as err:
            raise WorkerError(f"--remote {self.address}: {err}") from None
        except (P.ConnectionClosed, OSError, socket.timeout):
            raise WorkerError(f"the worker at {self.address} closed the connection during the handshake") from None
        if reply.kind == P.ERROR:
            code, message = reply.meta.get("code"), str(reply.meta.get("message", "?"))[:200]
            if code == "auth":
                raise WorkerError(f"the worker at {self.address} refused the token ({message})")
            raise WorkerError(f"the worker at {self.address} refused the connection ({message})")
        if reply.kind != P.WELCOME or not isinstance(reply.meta.get("config"), dict):
            raise WorkerError(f"the worker at {self.address} answered the handshake with {reply.name}")
        return reply.meta

    def request(self, kind: int, meta: dict, blobs: list, timeout: float) -> tuple[P.RawMessage, int, float]:
        """Send one request, wait for its reply → (raw reply, bytes sent, seconds from sending to the whole
        reply read). Raises OSError / socket.timeout / P.ConnectionClosed / P.ProtocolError when the
        connection is broken."""
        data = P.pack(kind, meta, blobs)
        self.sock.settimeout(timeout)
        t0 = time.perf_counter()
        self.sock.sendall(data)
        reply = P.recv_raw(self.sock)
        return reply, len(data), time.perf_counter() - t0

    def send(self, kind: int, meta: dict) -> None:
        self.sock.sendall(P.pack(kind, meta))

    def close(self) -> None:
        sock, self.sock = getattr(self, "sock", None), None
        if sock is not None:
            try:
                sock.settimeout(0.2)
                sock.sendall(P.pack(P.BYE))
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


class RemoteGraphs(GraphRunner):
    """Stands for the worker's engine in :class:`Backend` (name / device / precision / describe); the
    calls themselves go through :class:`RemoteBackend`, at the image level."""

    def __init__(self, info: dict, address: str):
        self.engine = "remote"
        self.device = f"{info.get('engine', '?')}/{info.get('device', '?')}"
        self.precision = str(info.get("precision", "?"))
        self.address = address
        self.worker_describe = str(info.get("describe", "?"))

    def describe(self) -> str:
        return f"remote worker {self.address} ({self.worker_describe})"

    def encode_source(self, source, kp_source=None):
        raise NotImplementedError("RemoteBackend sends images, not tensors")

    def keypoints(self, image):
        raise NotImplementedError("RemoteBackend sends images, not tensors")

    def generate(self, source, feeds):
        raise NotImplementedError("RemoteBackend sends images, not tensors")


class RemoteBackend(Backend):
    """A :class:`Backend` served by ``splinecam worker`` at ``host:port`` (see the module docstring).

    Raises :class:`WorkerError` (one line) when the worker cannot be reached or refuses at start. A reply
    that takes longer than ``reply_timeout`` + 4 × the slowest recent round trip means the worker is gone.
    ``say``: where the one-line "worker lost / back" notes go. ``report()``: the ``remote`` metrics.
    """

    def __init__(self, host: str, port: int, token: str, codec: str = "jpeg", quality: int = 90,
                 retry_s: float = 1.0, connect_timeout: float = 5.0, reply_timeout: float = 3.0, say=None,
                 clock=time.monotonic):
        from splinecam.engines.tpsmm.config import config_from_dict

        if codec not in CODECS:
            raise ValueError(f"codec must be one of {CODECS}")
        self.host, self.port, self._token = host, int(port), token
        self.codec, self.quality = codec, int(quality)
        self.retry_s, self.connect_timeout, self.reply_timeout = float(retry_s), float(connect_timeout), float(reply_timeout)
        self.say = say or (lambda msg: log.warning("%s", msg))
        self.clock = clock
        self.stats = _Stats()
        self._conn: WorkerConnection | None = WorkerConnection(host, self.port, token, codec, quality, connect_timeout)
        self.address = self._conn.address
        info = self.info = self._conn.info
        self.stats.sessions = 1
        try:
            cfg = dict(info["config"])
            config = config_from_dict(cfg, str(cfg.get("name", "remote")))
        except (SplinecamError, KeyError, TypeError, ValueError) as err:
            self._conn.close()
            raise WorkerError(f"the worker at {self.address} described its model in a way this splinecam does not "
                              f"understand ({str(err)[:120]}): run the same version on both machines") from None
        self.model_hash = str(info.get("model_hash", ""))
        super().__init__(config, RemoteGraphs(info, self.address), self._remote_avd if info.get("has_avd") else None,
                         bool(info.get("has_bg")))
        self._uploaded: set[int] = set()
        self._next_id = 0
        self._next_attempt = 0.0
        self._offline_since: float | None = None
        self._offline_reason = ""
        self._slowest = 0.0   # the slowest recent round trip (s): sets the reply timeout

    # ------------------------------------------------------------------ connection
    @property
    def keypoints_where(self) -> str:
        return "client (face mesh)" if self.landmarks is not None else "worker (keypoint network)"

    @property
    def online(self) -> bool:
        return self._conn is not None

    def _timeout(self, kind: str) -> float:
        if kind == "prepare":
            return 60.0
        return min(30.0, self.reply_timeout + 4.0 * self._slowest)

    def _lost(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        with self.stats.lock:
            self.stats.generated_before += self.stats.generated_now
            self.stats.generated_now = 0
            self.stats.lost += 1
        now = self.clock()
        self._offline_since = now
        self._next_attempt = now + self.retry_s
        self._offline_reason = f"worker {self.address} unreachable: retrying every {self.retry_s:g} s"
        self.say(f"splinecam: the worker at {self.address} went away ({why}): showing the avatar at rest, "
                 f"retrying every {self.retry_s:g} s")

    def _offline(self) -> BackendOffline:
        with self.stats.lock:
            self.stats.offline_calls += 1
        return BackendOffline(self._offline_reason)

    def _reconnect(self) -> WorkerConnection:
        now = self.clock()
        if now < self._next_attempt:
            raise self._offline()
        self._next_attempt = now + self.retry_s
        try:
            conn = WorkerConnection(self.host, self.port, self._token, self.codec, self.quality,
                                    min(self.connect_timeout, max(0.2, self.retry_s)))
        except WorkerError as err:
            if "refused" in str(err):
                self._offline_reason = f"worker {self.address}: {err}; retrying every {self.retry_s:g} s"
            raise self._offline() from None
        if str(conn.info.get("model_hash", "")) != self.model_hash or int(conn.info.get("size", -1)) != self.size:
            conn.close()
            self._offline_reason = (f"the worker at {self.address} came back with another model: restart "
                                    f"`splinecam live` to use it")
            raise self._offline()
        away = now - (self._offline_since or now)
        with self.stats.lock:
            self.stats.sessions += 1
            self.stats.offline_s += away
        self._offline_since = None
        self._uploaded = set()
        self._conn = conn
        self.say(f"splinecam: the worker at {self.address} is back (after {away:.1f} s)")
        return conn

    def _request(self, what: str, kind: int, meta: dict, blobs: list, expect: int) -> P.Message:
        conn = self._conn or self._reconnect()
        try:
            raw, sent, rtt = conn.request(kind, meta, blobs, self._timeout(what))
            t0 = time.perf_counter()
            reply = P.decode(raw.kind, raw.meta, raw.payload, raw.version, raw.nbytes)
            self.stats.codec(time.perf_counter() - t0)
        except socket.timeout:
            self._lost(f"no reply within {self._timeout(what):.0f} s")
            raise self._offline() from None
        except P.ConnectionClosed:
            self._lost("connection closed")
            raise self._offline() from None
        except P.ProtocolError as err:
            self._lost(str(err))
            raise self._offline() from None
        except OSError as err:
            self._lost(err.strerror or type(err).__name__)
            raise self._offline() from None
        if reply.kind == P.ERROR:
            code, message = reply.meta.get("code"), str(reply.meta.get("message", "?"))[:300]
            if code == "refused":
                raise SplinecamError(f"the worker at {self.address}: {message}")
            if code == "unknown_source":
                raise _Unknown(message)
            with self.stats.lock:
                self.stats.worker_errors += 1
            raise BackendOffline(f"the worker at {self.address} failed: {message}")
        if reply.kind != expect:
            self._lost(f"it answered {reply.name}")
            raise self._offline()
        self._slowest = max(rtt, 0.9 * self._slowest)
        self.stats.request(what, rtt, float(reply.meta.get("worker_ms", 0.0) or 0.0),
                           float(reply.meta.get("infer_ms", 0.0) or 0.0), sent, reply.nbytes)
        return reply

    def _upload(self, src: RemoteSource) -> np.ndarray:
        reply = self._request("prepare", P.PREPARE, {"id": src.id}, [P.Blob("image", src.image)], P.PREPARED)
        self._uploaded.add(src.id)
        return P.expect_array(reply, "kp", (self.config.num_kp, self.kp_width))

    def _image_blob(self, name: str, image: np.ndarray) -> P.Blob:
        t0 = time.perf_counter()
        blob = P.Blob(name, image, None if self.codec == "raw" else self.codec, self.quality)
        if blob.codec is not None:  # encode now, to time it apart from the network
            blob.data = P.encode_image(image, blob.codec, blob.quality)
        self.stats.codec(time.perf_counter() - t0)
        return blob

    # ------------------------------------------------------------------ the Backend interface
    def prepare_source(self, image: np.ndarray) -> SourceState:
        image = _uint8(image)
        S = self.size
        if image.shape != (S, S, 3):
            raise ValueError(f"the avatar must be ({S}, {S}, 3), got {image.shape}")
        with self.timer.time("prepare_source"):
            src = RemoteSource(self._next_id, image.copy())
            self._next_id += 1
            kp = self._upload(src)
        return SourceState(image=image, kp=kp, tensors=src)

    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        with self.timer.time("keypoints"):
            if self.landmarks is not None:  # face mesh on this machine: only keypoints will cross the wire
                return self.landmarks.driving(frame)
            reply = self._request("keypoints", P.KEYPOINTS, {}, [self._image_blob("image", _uint8(frame))],
                                  P.KEYPOINTS_OK)
            return P.expect_array(reply, "kp", (self.config.num_kp, self.kp_width)).copy()

    def generate(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        src = source.tensors
        if not isinstance(src, RemoteSource):
            raise TypeError("generate needs a SourceState prepared by this RemoteBackend")
        blobs = [P.Blob("kp", np.asarray(kp_driving, np.float32).reshape(-1, self.kp_width))]
        if bg_param is not None:
            blobs.append(P.Blob("bg", np.asarray(bg_param, np.float32).reshape(3, 3)))
        with self.timer.time("generate"):
            for attempt in (0, 1):
                if self._conn is None or src.id not in self._uploaded:
                    if self._conn is None:
                        self._reconnect()
                    self._upload(src)
                try:
                    reply = self._request("generate", P.GENERATE, {"id": src.id}, blobs, P.FRAME)
                    break
                except _Unknown:
                    self._uploaded.discard(src.id)
                    if attempt:
                        raise BackendOffline(f"the worker at {self.address} keeps losing the avatar") from None
            generated = reply.meta.get("generated")
            if isinstance(generated, int):
                with self.stats.lock:
                    self.stats.generated_now = generated
            return P.expect_array(reply, "image", (self.size, self.size, 3), "uint8")

    def avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        if not self.has_avd:
            raise BackendUnavailableError("the worker's checkpoint has no AVD network: use --mode relative or standard")
        return self._remote_avd(kp_source, kp_driving)

    def _remote_avd(self, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
        reply = self._request("avd", P.AVD, {}, [P.Blob("kp_source", np.asarray(kp_source, np.float32)),
                                                 P.Blob("kp_driving", np.asarray(kp_driving, np.float32))], P.AVD_OK)
        return P.expect_array(reply, "kp", (self.config.num_kp, 2)).copy()

    def background(self, source: SourceState, frame: np.ndarray) -> np.ndarray:
        raise BackendUnavailableError("background motion is not served by the remote worker")

    # float-level API (tests, bench): through the image-level calls, so as lossy as the codec
    def encode_source(self, source: np.ndarray, image: np.ndarray | None = None) -> SourceState:
        return self.prepare_source(nchw_to_image(source) if image is None else image)

    def keypoints_nchw(self, frame: np.ndarray) -> np.ndarray:
        return self.keypoints(nchw_to_image(frame))

    def predict(self, source: SourceState, kp_driving: np.ndarray, bg_param: np.ndarray | None = None) -> np.ndarray:
        return image_to_nchw(self.generate(source, kp_driving, bg_param))

    # ------------------------------------------------------------------ reporting
    def report(self) -> dict:
        """The ``remote`` section of the live metrics."""
        data = self.stats.summary()
        if self._offline_since is not None:
            data["offline_s"] = round(data["offline_s"] + self.clock() - self._offline_since, 3)
        info = self.info
        return {"worker": self.address, "worker_backend": str(info.get("describe", "?")),
                "model": self.config.name, "weights": str(info.get("weights", "")),
                "keypoints_on": self.keypoints_where,
                "frames_as": self.codec if self.codec != "jpeg" else f"jpeg q{self.quality}",
                "online": self.online, **data}

    @property
    def metric_sections(self) -> dict:
        return {"remote": self.report}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self.landmarks is not None:
            self.landmarks.close()


class _Unknown(Exception):
    """The worker does not hold this avatar (it restarted, or dropped it)."""


def _uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
