"""The remote worker: serves one model's networks to ``splinecam live --remote`` clients over TCP.

    server = WorkerServer(backend, token, "127.0.0.1", 7860)   # binds now (OSError if the port is taken)
    server.serve_forever()                                      # or server.start() for a background thread
    server.close()

One thread per connection (``socketserver.ThreadingTCPServer``); the backend runs one request at a time
(a lock: engines such as TensorRT contexts are not re-entrant), so two laptops share the GPU in turn.
Each connection keeps its own avatars (``SourceState`` by the client's id, at most ``max_sources``).

Robustness: anything a client sends is validated (:mod:`.protocol`); a bad message gets an ERROR reply
and, when the byte stream can no longer be trusted (bad magic, oversized, another version), the
connection is closed. Nothing a client sends can stop the worker: every failure is caught per
connection and logged. A client must authenticate within ``hello_timeout`` seconds. Refusals are
logged with the peer's address and the reason; the token never is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import socketserver
import threading
import time

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.engines.remote import protocol as P
from splinecam.engines.remote.protocol import splinecam_version

log = logging.getLogger("splinecam.worker")

REPLY_CODECS = ("jpeg", "png", "raw")


def make_token() -> str:
    return secrets.token_urlsafe(18)


def token_proof(token: str, nonce: bytes) -> str:
    """What a client sends to prove it holds ``token``: hex HMAC-SHA256(token, nonce)."""
    return hmac.new(token.encode("utf-8"), nonce, hashlib.sha256).hexdigest()


def model_info(backend, model_hash: str = "", weights: str = "") -> dict:
    """What a client needs to know of the worker's model (sent in WELCOME); ``weights``: the checkpoint's
    file name, for reports."""
    cfg = backend.config.to_yaml_dict()
    for k in ("train_params", "train_avd_params", "dataset_params"):
        cfg.pop(k, None)
    return {"config": cfg, "engine": backend.name, "device": backend.device, "precision": backend.precision,
            "describe": backend.describe(), "has_avd": bool(backend.has_avd), "has_bg": bool(backend.has_bg),
            "size": int(backend.size), "num_kp": int(backend.config.num_kp),
            "model_hash": model_hash, "weights": weights, "worker": splinecam_version()}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address, handler, worker: "WorkerServer"):
        self.worker = worker
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request, client_address):  # never print a traceback to stderr and go on
        log.exception("connection from %s failed", _peer(client_address))


def _peer(addr) -> str:
    try:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    except Exception:
        return str(addr)


class _Connection(socketserver.BaseRequestHandler):
    """One client, from greeting to goodbye."""

    def handle(self) -> None:
        worker: WorkerServer = self.server.worker
        sock: socket.socket = self.request
        peer = _peer(self.client_address)
        if not worker._slots.acquire(blocking=False):
            self._send(P.error_message("busy", f"the worker already serves {worker.max_clients} clients"))
            log.warning("refused %s: already serving %d clients", peer, worker.max_clients)
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            with worker._count_lock:
                worker._sockets.add(sock)
            session = _Session(worker, sock, peer)
            session.run()
        finally:
            with worker._count_lock:
                worker._sockets.discard(sock)
            worker._slots.release()

    def _send(self, data: bytes) -> None:
        try:
            self.request.sendall(data)
        except OSError:
            pass


class _Session:
    def __init__(self, worker: "WorkerServer", sock: socket.socket, peer: str):
        self.worker, self.sock, self.peer = worker, sock, peer
        self.sources: dict[int, object] = {}
        self.generated = 0
        self.infer_s = 0.0
        self.codec, self.quality = "jpeg", 90

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def refuse(self, code: str, message: str, why: str | None = None) -> None:
        log.warning("refused %s: %s", self.peer, why or message)
        self.worker._count("refused")
        try:
            self.send(P.error_message(code, message))
        except OSError:
            pass

    # ------------------------------------------------------------------ handshake
    def hello(self) -> bool:
        w = self.worker
        nonce = secrets.token_bytes(16)
        self.sock.settimeout(w.hello_timeout)
        self.send(P.pack(P.GREETING, {"nonce": nonce.hex(), "worker": splinecam_version(), "max_payload": w.max_payload}))
        try:
            msg = P.recv_message(self.sock, 0)   # before the token is checked: a small description, no payload
        except P.ProtocolError as err:
            self.refuse(err.code, str(err))
            return False
        except socket.timeout:
            self.refuse("auth", f"no hello within {w.hello_timeout:g} s", "said nothing")
            return False
        if msg.kind != P.HELLO:
            self.refuse("malformed", f"expected a hello, got {msg.name}")
            return False
        proof = msg.meta.get("auth")
        if not proof:
            self.refuse("auth", "no token given: pass the worker's token with --token", "no token")
            return False
        if not isinstance(proof, str) or not hmac.compare_digest(proof.encode(), token_proof(w.token, nonce).encode()):
            self.refuse("auth", "wrong token: use the token the worker printed when it started", "wrong token")
            return False
        codec, quality = msg.meta.get("codec", "jpeg"), msg.meta.get("quality", 90)
        if codec not in REPLY_CODECS or not isinstance(quality, int) or not 1 <= quality <= 100:
            self.refuse("malformed", f"bad reply codec {str(codec)[:10]!r} / quality")
            return False
        self.codec, self.quality = codec, quality
        self.sock.settimeout(None)
        self.send(P.pack(P.WELCOME, w.info))
        log.info("client %s connected (splinecam %s, frames as %s)", self.peer, str(msg.meta.get("client", "?"))[:20],
                 codec if codec == "raw" else f"{codec} q{quality}" if codec == "jpeg" else codec)
        return True

    # ------------------------------------------------------------------ requests
    def run(self) -> None:
        w = self.worker
        try:
            if not self.hello():
                return
            w._count("clients")
            while not w._closing.is_set():
                try:
                    raw = P.recv_raw(self.sock, w.max_payload)
                except P.ConnectionClosed:
                    return
                t0 = time.perf_counter()
                try:
                    msg = P.decode(raw.kind, raw.meta, raw.payload, raw.version, raw.nbytes)
                    if msg.kind == P.BYE:
                        return
                    reply = self.dispatch(msg, t0)
                except P.ProtocolError as err:
                    self.refuse(err.code, str(err), f"{err.code}: {err}")
                    if err.fatal:
                        return
                    continue
                except SplinecamError as err:
                    self.refuse("refused", str(err))
                    continue
                except Exception as err:  # a bug or a backend failure: this request fails, the worker goes on
                    log.exception("request from %s failed", self.peer)
                    self.send(P.error_message("internal", f"the worker failed on this request "
                                                          f"({type(err).__name__}; see the worker's log)"))
                    continue
                if reply is not None:
                    self.send(reply)
        except P.ProtocolError as err:  # a framing error: answer and close
            self.refuse(err.code, str(err), f"{err.code}: {err}")
        except P.ConnectionClosed:
            pass
        except OSError as err:
            log.info("client %s: connection lost (%s)", self.peer, err.strerror or type(err).__name__)
        finally:
            if self.generated or self.sources:
                mean = self.infer_s * 1000.0 / max(1, self.generated)
                log.info("client %s left after %d frames (%.1f ms inference per frame)", self.peer, self.generated, mean)
            self.sources.clear()

    def _reply(self, kind: int, meta: dict, blobs: list, t0: float, infer_s: float) -> bytes:
        encoded = P.encode_blobs(blobs)
        meta.update(worker_ms=round((time.perf_counter() - t0) * 1000.0, 3), infer_ms=round(infer_s * 1000.0, 3))
        return P.pack_encoded(kind, meta, encoded)

    def _image_blob(self, name: str, image: np.ndarray) -> P.Blob:
        return P.Blob(name, image, None if self.codec == "raw" else self.codec, self.quality)

    def _source_id(self, msg: P.Message) -> int:
        sid = msg.meta.get("id")
        if not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid < 2 ** 31:
            raise P.ProtocolError("malformed", f"{msg.name} needs an integer avatar id")
        return sid

    def dispatch(self, msg: P.Message, t0: float) -> bytes | None:
        w, b = self.worker, self.worker.backend
        S, K = b.size, b.config.num_kp
        if msg.kind == P.PREPARE:
            sid = self._source_id(msg)
            image = P.expect_array(msg, "image", (S, S, 3), "uint8")
            if sid not in self.sources and len(self.sources) >= w.max_sources:
                raise P.ProtocolError("too_large", f"at most {w.max_sources} avatars per client: release some first")
            with w.lock:
                t1 = time.perf_counter()
                state = b.prepare_source(image)
                dt = time.perf_counter() - t1
            self.sources[sid] = state
            return self._reply(P.PREPARED, {"id": sid}, [P.Blob("kp", state.kp.astype(np.float32))], t0, dt)
        if msg.kind == P.KEYPOINTS:
            image = P.expect_array(msg, "image", (S, S, 3), "uint8")
            with w.lock:
                t1 = time.perf_counter()
                kp = b.keypoints(image)
                dt = time.perf_counter() - t1
            return self._reply(P.KEYPOINTS_OK, {}, [P.Blob("kp", np.asarray(kp, np.float32))], t0, dt)
        if msg.kind == P.GENERATE:
            sid = self._source_id(msg)
            kp = P.expect_array(msg, "kp", (K, b.kp_width))  # (K, 6) for FOMM: positions + jacobians
            bg = P.expect_array(msg, "bg", (3, 3)) if "bg" in msg.arrays else None
            state = self.sources.get(sid)
            if state is None:
                raise P.ProtocolError("unknown_source", f"avatar {sid} was not prepared on this connection")
            with w.lock:
                t1 = time.perf_counter()
                frame = b.generate(state, kp, bg)
                dt = time.perf_counter() - t1
            self.generated += 1
            self.infer_s += dt
            w._count("frames_generated")
            return self._reply(P.FRAME, {"id": sid, "generated": self.generated}, [self._image_blob("image", frame)],
                               t0, dt)
        if msg.kind == P.AVD:
            if not b.has_avd:
                raise SplinecamError("this worker's checkpoint has no AVD network: use --mode relative or standard")
            ks, kd = P.expect_array(msg, "kp_source", (K, 2)), P.expect_array(msg, "kp_driving", (K, 2))
            with w.lock:
                t1 = time.perf_counter()
                kp = b.avd(ks, kd)
                dt = time.perf_counter() - t1
            return self._reply(P.AVD_OK, {}, [P.Blob("kp", np.asarray(kp, np.float32))], t0, dt)
        if msg.kind == P.RELEASE:
            self.sources.pop(self._source_id(msg), None)
            return None
        raise P.ProtocolError("malformed", f"unexpected {msg.name} message")


class WorkerServer:
    """Serves ``backend`` on (host, port) to clients holding ``token``.

    ``address``: the bound (host, port) — port 0 picks a free one. ``counts``: clients, refused,
    frames_generated (over all connections).
    """

    def __init__(self, backend, token: str, host: str = "127.0.0.1", port: int = 7860, max_clients: int = 8,
                 max_sources: int = 64, max_payload: int = P.MAX_PAYLOAD, hello_timeout: float = 10.0,
                 model_hash: str = "", weights: str = ""):
        if not token:
            raise ValueError("the worker needs a token")
        self.backend, self.token = backend, token
        self.max_clients, self.max_sources, self.max_payload = max_clients, max_sources, max_payload
        self.hello_timeout = hello_timeout
        self.lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_clients)
        self._closing = threading.Event()
        self._count_lock = threading.Lock()
        self.counts = {"clients": 0, "refused": 0, "frames_generated": 0}
        self._sockets: set[socket.socket] = set()
        self.info = model_info(backend, model_hash, weights)
        self._serving = False
        self._server = _Server((host, port), _Connection, self)
        self.address = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving = False

    def start(self) -> "WorkerServer":
        self._serving = True
        self._thread = threading.Thread(target=self.serve_forever, name="splinecam-worker", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._serving:
            self._server.shutdown()
        self._server.server_close()
        with self._count_lock:
            sockets = list(self._sockets)
        for sock in sockets:  # the clients see the worker go, as when its process ends
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5.0)
