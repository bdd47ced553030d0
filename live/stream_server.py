"""The driverless output: the live frames as MJPEG over HTTP, a page for OBS, and a control page.

    server = StreamServer("127.0.0.1", 8080, controller=pipeline)   # binds now; a sink of the fan-out
    fanout.sinks.append(server)                                      # gets exactly what the virtual camera gets

Endpoints (GET never changes anything):

    /             the stream, full-window, nothing else — OBS's Browser Source, or a tab to share
    /stream.mjpg  multipart/x-mixed-replace JPEGs at the loop's steady output fps
    /frame.jpg    the newest frame, once
    /control      buttons for the hotkeys' actions (avatar, calibrate, best frame, pass-through, smoothing)
    /state        JSON: avatars, the current one, pass-through, smoothing, mode, fps, viewers
    POST /command {"action": …, "value": …} (live/control.py) → the hotkeys' queue

Why the standard library's ``http.server`` (one thread per connection): viewers are a handful (OBS, a
tab, the control page), each MJPEG response is one long write loop, and a thread that blocks on a slow
socket blocks only itself. No dependency, nothing to await.

Never a stall, never a queue: :meth:`send` (called by the fan-out, i.e. the steady sender) only stores
the newest frame and wakes the encoder thread, which JPEG-encodes it once for every viewer — only while
someone watches; a repeated frame reuses its JPEG. Each viewer thread sends the newest JPEG whenever it
is ready for one and skips what it missed (counted); its socket's send buffer is small, so a slow viewer
lags by a frame or two, not by seconds, and one that stops reading is dropped after ``write_timeout``.

Privacy: the server is a sink like the virtual camera, so it gets only what the virtual camera gets
(the avatar; the real camera only while pass-through is on). Requests from other machines need the
token (``?token=`` or the ``X-Splinecam-Token`` header); state-changing requests must be same-origin
JSON POSTs (a page from another site cannot send one; its ``Origin`` / ``Sec-Fetch-Site`` give it away);
a ``Host`` header that is not this machine's name or an IP address is refused (DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from splinecam.engines.errors import SplinecamError
from splinecam.live.control import ControlError, command_from_request, control_page, viewer_page
from splinecam.live.sinks import OutputFrame

log = logging.getLogger(__name__)

BOUNDARY = "splinecamframe"
MAX_BODY = 4096


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host in ("localhost",)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address, handler, stream: "StreamServer"):
        self.stream = stream
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        log.debug("stream connection from %s failed", client_address, exc_info=True)


class StreamServer:
    """An HTTP server and a live-loop sink (``send`` / ``close``). See the module docstring.

    ``controller``: an object with ``command(Command)`` and ``control_state() -> dict`` (the pipeline),
    None for a stream without controls. ``token``: needed by requests from other machines (None: they
    are refused). ``quality``: JPEG quality.
    """

    name = "stream"

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, controller=None, token: str | None = None,
                 quality: int = 85, write_timeout: float = 10.0, send_buffer: int = 256 * 1024, say=print):
        self.controller = controller
        self.token = token
        self.quality = int(quality)
        self.write_timeout = write_timeout
        self.send_buffer = send_buffer
        self.say = say
        self._cond = threading.Condition()
        self._closed = False
        self._newest: OutputFrame | None = None
        self._ticks = 0               # frames handed to send()
        self._encoded_tick = 0        # the tick the current JPEG belongs to
        self._jpeg: bytes | None = None
        self._jpeg_of: OutputFrame | None = None
        self._seq = 0                 # JPEGs published (one per tick while someone watches)
        self._lock = threading.Lock()
        self.counts = {"viewers_total": 0, "viewers_peak": 0, "frames_served": 0, "frames_encoded": 0,
                       "frames_skipped": 0, "viewers_dropped": 0, "control_requests": 0, "refused_requests": 0}
        self.viewers = 0
        self._encode_s = 0.0
        self._jpeg_bytes = 0
        try:
            self._server = _HTTPServer((host, port), _Handler, self)
        except OSError as err:
            raise SplinecamError(f"--serve {host}:{port}: cannot listen there ({err.strerror or err})") from None
        self.host, self.port = self._server.server_address[:2]
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                          name="splinecam-stream-http", daemon=True),
                         threading.Thread(target=self._encode_loop, name="splinecam-stream-encoder", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------------ the sink
    def send(self, frame: OutputFrame) -> None:
        with self._cond:
            self._newest = frame
            self._ticks += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(2.0)

    # ------------------------------------------------------------------ encoding
    def _encode_loop(self) -> None:
        import cv2

        while True:
            with self._cond:
                # a viewer that joins before the first frame sets _encoded_tick = -1 with nothing to encode yet:
                # wait for a frame (encoding None killed this thread, and the stream with it)
                self._cond.wait_for(lambda: self._closed or (self._ticks != self._encoded_tick and self.viewers > 0
                                                             and self._newest is not None))
                if self._closed:
                    return
                frame, tick = self._newest, self._ticks
            if frame is self._jpeg_of and self._jpeg is not None:
                jpeg = self._jpeg                       # a repeated frame: same picture, same bytes
            else:
                t0 = time.perf_counter()
                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame.image[..., ::-1]),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    log.error("stream: a frame could not be JPEG-encoded")
                    with self._cond:
                        self._encoded_tick = tick
                    continue
                jpeg = buf.tobytes()
                with self._lock:
                    self._encode_s += time.perf_counter() - t0
                    self._jpeg_bytes += len(jpeg)
                    self.counts["frames_encoded"] += 1
            with self._cond:
                self._jpeg, self._jpeg_of, self._encoded_tick = jpeg, frame, tick
                self._seq += 1
                self._cond.notify_all()

    def newest_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait (≤ timeout) for a JPEG newer than sequence ``after`` → (its sequence, bytes); (after, None)
        on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (self._seq > after and self._jpeg is not None), timeout)
            if self._closed or self._seq <= after or self._jpeg is None:
                return after, None
            return self._seq, self._jpeg

    def snapshot(self) -> bytes | None:
        """The newest frame as JPEG (encoded here when no viewer keeps one fresh)."""
        import cv2

        with self._cond:
            frame, jpeg_of, jpeg = self._newest, self._jpeg_of, self._jpeg
        if frame is None:
            return None
        if frame is jpeg_of and jpeg is not None:
            return jpeg
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame.image[..., ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return buf.tobytes() if ok else None

    def _viewer(self, delta: int) -> int:
        """A viewer joins (+1) or leaves (-1); returns the JPEG sequence now: a joining viewer waits for a
        newer one, encoded after it joined (never an old frame kept from before)."""
        with self._cond:
            self.viewers += delta
            if delta > 0:
                self._encoded_tick = -1  # publish the newest frame again now, for this viewer
                self.counts["viewers_total"] += 1
                self.counts["viewers_peak"] = max(self.counts["viewers_peak"], self.viewers)
            elif self.viewers == 0:  # nobody kept it fresh: the next viewer must not see an old frame
                self._jpeg, self._jpeg_of = None, None
            self._cond.notify_all()
            return self._seq

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    @property
    def closed(self) -> bool:
        return self._closed

    def report(self) -> dict:
        """The ``stream`` section of the live metrics."""
        with self._lock:
            c = dict(self.counts)
            enc = self._encode_s * 1000.0 / max(1, c["frames_encoded"])
            kb = self._jpeg_bytes / 1024.0 / max(1, c["frames_encoded"])
        return {"url": self.url, "viewers_now": self.viewers, **c,
                "encode_ms": round(enc, 3) if c["frames_encoded"] else None,
                "jpeg_kb": round(kb, 1) if c["frames_encoded"] else None}

    # ------------------------------------------------------------------ access rules
    def token_ok(self, given: str | None) -> bool:
        return bool(self.token) and given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class _Handler(BaseHTTPRequestHandler):
    server_version = "splinecam"
    sys_version = ""

    @property
    def stream(self) -> StreamServer:
        return self.server.stream

    def log_message(self, format, *args):  # no access log on the terminal
        pass

    # ------------------------------------------------------------------ helpers
    def _reply(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._reply(status, json.dumps(data).encode(), "application/json")

    def _refuse(self, status: int, why: str) -> None:
        self.stream._count("refused_requests")
        log.warning("stream: refused %s %s from %s: %s", self.command, urlsplit(self.path).path[:60],
                    self.client_address[0], why)
        self._json(status, {"error": why})

    def _peer_local(self) -> bool:
        return _is_loopback(self.client_address[0])

    def _given_token(self) -> str | None:
        q = parse_qs(urlsplit(self.path).query).get("token")
        return self.headers.get("X-Splinecam-Token") or (q[0] if q else None)

    def _host_ok(self) -> bool:
        """The Host header names this machine (an IP, localhost, its host name): not a rebound domain."""
        host = (self.headers.get("Host") or "").strip()
        if not host:
            return True  # HTTP/1.0 clients without Host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if _is_ip(name) or name == "localhost" or name.endswith(".localhost"):
            return True
        return name in {socket.gethostname().lower(), socket.getfqdn().lower()}

    def _allowed(self) -> bool:
        if not self._host_ok():
            self._refuse(HTTPStatus.FORBIDDEN, "unexpected Host header: open the stream by IP address, localhost "
                                               "or this machine's name")
            return False
        if not self._peer_local() and not self.stream.token_ok(self._given_token()):
            self._refuse(HTTPStatus.UNAUTHORIZED, "requests from other machines need the token "
                                                  "(?token=… or the X-Splinecam-Token header)")
            return False
        return True

    def _page_token(self) -> str | None:
        """The token a page hands on to its own requests (only to whoever already gave it)."""
        return None if self._peer_local() else self._given_token()

    # ------------------------------------------------------------------ GET
    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._reply(200, viewer_page(self._page_token()).encode(), "text/html; charset=utf-8")
        elif path == "/stream.mjpg":
            self._mjpeg()
        elif path == "/frame.jpg":
            jpeg = self.stream.snapshot()
            if jpeg is None:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no frame yet"})
            else:
                self._reply(200, jpeg, "image/jpeg")
        elif path == "/control":
            if self.stream.controller is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "this stream has no controls"})
            else:
                self._reply(200, control_page(self._page_token()).encode(), "text/html; charset=utf-8")
        elif path == "/state":
            if self.stream.controller is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": "this stream has no controls"})
            else:
                state = dict(self.stream.controller.control_state())
                state["viewers"] = self.stream.viewers
                self._json(200, state)
        elif path == "/favicon.ico":
            self._reply(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing at {path[:60]}: try / , /stream.mjpg or /control"})

    def _mjpeg(self) -> None:
        s = self.stream
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, s.send_buffer)
        except OSError:
            pass
        self.connection.settimeout(s.write_timeout)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        seq = s._viewer(+1)
        served = 0
        try:
            while not s.closed:
                new_seq, jpeg = s.newest_jpeg(seq, 1.0)
                if jpeg is None:
                    continue
                if served and new_seq > seq + 1:
                    s._count("frames_skipped", new_seq - seq - 1)
                seq = new_seq
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
                                 f"X-Sequence: {seq}\r\n\r\n".encode() + jpeg + b"\r\n")
                served += 1
                s._count("frames_served")
        except socket.timeout:
            s._count("viewers_dropped")
            log.warning("stream: dropped a viewer at %s that stopped reading", self.client_address[0])
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            pass
        finally:
            s._viewer(-1)
            self.close_connection = True

    # ------------------------------------------------------------------ POST
    def do_POST(self):
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path != "/command":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"nothing to POST at {path[:60]}: use /command"})
            return
        why = self._cross_site()
        if why:
            self._refuse(HTTPStatus.FORBIDDEN, why)
            return
        if self.stream.controller is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": "this stream has no controls"})
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the command as application/json")
            return
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_BODY:
            self._refuse(HTTPStatus.BAD_REQUEST, f"a command is a small JSON object (1-{MAX_BODY} bytes)")
            return
        try:
            cmd = command_from_request(json.loads(self.rfile.read(n).decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as err:  # ControlError is a ValueError, so is bad JSON
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(err) if isinstance(err, ControlError) else
                                                "the body is not JSON"})
            return
        self.stream._count("control_requests")
        if cmd.action.name == "PASSTHROUGH" and cmd.arg:
            self.stream.say(f"splinecam: pass-through turned ON from the control page ({self.client_address[0]}): "
                            f"the output shows your camera")
        self.stream.controller.command(cmd)
        self._json(HTTPStatus.ACCEPTED, {"ok": True, "queued": cmd.action.value,
                                         **({"value": cmd.arg} if cmd.arg is not None else {})})

    def _cross_site(self) -> str | None:
        """Why this POST looks like it came from another site's page (None: it does not)."""
        origin = self.headers.get("Origin")
        host = self.headers.get("Host") or ""
        if origin is not None and origin != "null":
            o = urlsplit(origin)
            if o.scheme not in ("http", "https") or o.netloc.lower() != host.lower():
                return "cross-origin request refused: use the control page served here"
        elif origin == "null":
            return "cross-origin request refused (Origin: null)"
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {site[:20]})"
        return None

    def do_OPTIONS(self):  # no CORS: a preflight from another origin gets nothing it could use
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "no cross-origin requests")
