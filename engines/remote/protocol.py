"""The remote worker's wire protocol: length-prefixed binary messages over one TCP connection.

Why this and not ZeroMQ / WebSocket / gRPC: the exchange is one request, one reply, strictly in turn,
between two splinecam processes; TCP already gives ordering and flow control, and a 16-byte header
plus a JSON description and raw bytes is all the framing needed. The standard library does it
(``socket``, ``struct``, ``json``, ``hmac``): no new dependency, nothing to compile on a GPU box, and
every byte that crosses the wire is ours to count and to validate. Nothing received is ever unpickled.

Every message::

    header  16 bytes, network order: magic b"SPLC" | version u8 | kind u8 | flags u16 (0)
                                     | meta length u32 | payload length u32
    meta    UTF-8 JSON object (≤ MAX_META bytes); meta["blobs"] describes the payload:
            [[name, type, shape, nbytes], …] with type a numpy dtype ("float32", "uint8") or an image
            codec ("jpeg", "png") whose decoded shape is ``shape``
    payload the blobs' bytes, concatenated (≤ the receiver's limit, MAX_PAYLOAD by default)

A conversation (the worker speaks first, so a client that reached something else finds out at once)::

    worker → GREETING {nonce, worker version, limits}
    client → HELLO    {auth: hex HMAC-SHA256(token, nonce), client version, reply codec}
    worker → WELCOME  {model config, engine, device, precision, has_avd, has_bg, model hash}  or ERROR
    client → PREPARE {id} + image         worker → PREPARED {id} + kp          (once per avatar)
    client → KEYPOINTS + crop             worker → KEYPOINTS_OK + kp           (models with a keypoint net)
    client → GENERATE {id} + kp [+ bg]    worker → FRAME + image               (every frame)
    client → AVD + kp_source, kp_driving  worker → AVD_OK + kp                 (--mode avd)
    client → RELEASE {id}                 (no reply: the avatar's state is dropped)

Replies carry ``worker_ms`` (request received → reply ready) and ``infer_ms`` (the backend call alone)
so the client can split its round trip into network time, worker overhead and inference; FRAME replies
carry ``generated``, the frames the worker generated on this connection.

The token never crosses the wire: the client proves it holds it by the HMAC of the worker's fresh nonce.
(The frames themselves are not encrypted: across an untrusted network, use an SSH tunnel or a VPN.)

Errors are ERROR messages {code, message}: ``auth`` (wrong or missing token), ``version`` (another
protocol version), ``malformed`` (not a splinecam message, bad JSON, bad blobs), ``too_large``,
``unknown_source``, ``refused`` (a user error on the worker: no face in an avatar …), ``busy``,
``internal``. After a framing error (bad magic, oversized, unreadable header) the worker closes the
connection, since the stream can no longer be trusted; after the others it keeps serving.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"SPLC"
VERSION = 1
HEADER = struct.Struct("!4sBBHII")
MAX_META = 64 * 1024
MAX_PAYLOAD = 32 * 1024 * 1024   # a 2048×2048 raw avatar is 12 MiB
MAX_BLOBS = 8
MAX_DIMS = 4
MAX_SIDE = 4096

GREETING, HELLO, WELCOME, PREPARE, PREPARED, KEYPOINTS, KEYPOINTS_OK, GENERATE, FRAME, AVD, AVD_OK, RELEASE, \
    ERROR, BYE = range(1, 15)
KIND_NAMES = {GREETING: "greeting", HELLO: "hello", WELCOME: "welcome", PREPARE: "prepare", PREPARED: "prepared",
              KEYPOINTS: "keypoints", KEYPOINTS_OK: "keypoints-ok", GENERATE: "generate", FRAME: "frame",
              AVD: "avd", AVD_OK: "avd-ok", RELEASE: "release", ERROR: "error", BYE: "bye"}

DTYPES = ("float32", "uint8")
CODECS = ("jpeg", "png")
ERROR_CODES = ("auth", "version", "malformed", "too_large", "unknown_source", "refused", "busy", "internal")


class ProtocolError(Exception):
    """A message that breaks the protocol. ``code``: one of ERROR_CODES; ``fatal``: the stream cannot be
    trusted any more (close the connection)."""

    def __init__(self, code: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.code, self.fatal = code, fatal


class ConnectionClosed(Exception):
    """The peer closed the connection (cleanly, between messages, or in the middle of one)."""


@dataclass
class Message:
    """A decoded message: ``kind``, its ``meta`` (JSON object, without "blobs"), its arrays by name
    (images decoded to (H, W, 3) uint8), and its size on the wire (``nbytes``)."""

    kind: int
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    version: int = VERSION
    nbytes: int = 0

    @property
    def name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind {self.kind}")


# ----------------------------------------------------------------------------- images


def encode_image(image: np.ndarray, codec: str, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG / PNG bytes."""
    import cv2

    bgr = np.ascontiguousarray(image[..., ::-1])
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif codec == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown image codec {codec!r}")
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {codec}")
    return buf.tobytes()


def image_size(data: bytes, codec: str) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header or a PNG's IHDR, read before decoding anything (a small file
    may announce a huge picture); None when the header cannot be found."""
    if codec == "png":
        if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack("!II", data[16:24])
            return h, w
        return None
    i = 2
    if data[:2] != b"\xff\xd8":
        return None
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack("!H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            h, w = struct.unpack("!HH", data[i + 5:i + 9])
            return h, w
        i += 2 + length
    return None


def decode_image(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """JPEG / PNG bytes → (H, W, 3) uint8 RGB of the announced ``shape``; ProtocolError otherwise. The size
    in the file's header is checked first, so nothing bigger than announced is ever decoded."""
    import cv2

    codec = "png" if data[:4] == b"\x89PNG" else "jpeg"
    if image_size(data, codec) != tuple(shape[:2]):
        raise ProtocolError("malformed", f"an image blob is not a {codec} of the announced {shape[1]}x{shape[0]}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise ProtocolError("malformed", "an image blob does not decode")
    if tuple(bgr.shape) != tuple(shape):
        raise ProtocolError("malformed", f"an image blob decodes to {bgr.shape}, announced {tuple(shape)}")
    return np.ascontiguousarray(bgr[..., ::-1])


# ----------------------------------------------------------------------------- encoding


@dataclass
class Blob:
    """A named payload part: a raw array, or an image to send with ``codec``."""

    name: str
    array: np.ndarray
    codec: str | None = None
    quality: int = 90
    data: bytes | None = None   # the image already encoded with ``codec`` (to time the encoding apart)


@dataclass
class Encoded:
    """Blobs turned into bytes (images compressed), ready for :func:`pack_encoded`."""

    described: list
    parts: list[bytes]


def encode_blobs(blobs: list[Blob] | tuple) -> Encoded:
    parts, described = [], []
    for b in blobs:
        if b.codec is None:
            arr = np.ascontiguousarray(b.array)
            if arr.dtype.name not in DTYPES:
                arr = arr.astype(np.float32)
            data = arr.tobytes()
            described.append([b.name, arr.dtype.name, list(arr.shape), len(data)])
        else:
            data = b.data if b.data is not None else encode_image(b.array, b.codec, b.quality)
            described.append([b.name, b.codec, list(b.array.shape), len(data)])
        parts.append(data)
    return Encoded(described, parts)


def pack_encoded(kind: int, meta: dict | None, encoded: Encoded | None, version: int = VERSION) -> bytes:
    meta = dict(meta or {})
    if encoded is not None and encoded.described:
        meta["blobs"] = encoded.described
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    payload = b"".join(encoded.parts) if encoded is not None else b""
    return HEADER.pack(MAGIC, version, kind, 0, len(meta_bytes), len(payload)) + meta_bytes + payload


def pack(kind: int, meta: dict | None = None, blobs: list[Blob] | tuple = (), version: int = VERSION) -> bytes:
    """One message as bytes."""
    return pack_encoded(kind, meta, encode_blobs(blobs), version)


def error_message(code: str, message: str) -> bytes:
    return pack(ERROR, {"code": code, "message": message})


# ----------------------------------------------------------------------------- decoding


def _read_exact(sock: socket.socket, n: int, started: bool) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionClosed("in the middle of a message" if (got or started) else "between messages")
        got += k
    return bytes(buf)


def parse_header(data: bytes, max_payload: int = MAX_PAYLOAD) -> tuple[int, int, int, int]:
    """16 header bytes → (version, kind, meta length, payload length); ProtocolError (fatal) for bytes
    that are not a splinecam header or announce more than the limits."""
    magic, version, kind, _flags, meta_len, payload_len = HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError("malformed", "not a splinecam message (bad magic bytes): is this a splinecam worker "
                                         "and client?", fatal=True)
    if meta_len > MAX_META:
        raise ProtocolError("too_large", f"message description of {meta_len} bytes exceeds the limit of {MAX_META}",
                            fatal=True)
    if payload_len > max_payload:
        raise ProtocolError("too_large", f"message of {payload_len} bytes exceeds the limit of {max_payload}",
                            fatal=True)
    return version, kind, meta_len, payload_len


@dataclass
class RawMessage:
    version: int
    kind: int
    meta: bytes
    payload: bytes

    @property
    def nbytes(self) -> int:
        return HEADER.size + len(self.meta) + len(self.payload)


def recv_raw(sock: socket.socket, max_payload: int = MAX_PAYLOAD, expect_version: int | None = VERSION
             ) -> RawMessage:
    """Read one message's bytes. ``expect_version``: refuse another version (ProtocolError "version", fatal)
    — except ERROR messages, whose layout every version shares."""
    head = _read_exact(sock, HEADER.size, False)
    version, kind, meta_len, payload_len = parse_header(head, max_payload)
    if expect_version is not None and version != expect_version and kind != ERROR:
        raise ProtocolError("version", f"the other side speaks splinecam protocol v{version}, this one "
                                       f"v{expect_version}: run the same splinecam version on both machines",
                            fatal=True)
    meta_bytes = _read_exact(sock, meta_len, True)
    payload = _read_exact(sock, payload_len, True)
    return RawMessage(version, kind, meta_bytes, payload)


def recv_message(sock: socket.socket, max_payload: int = MAX_PAYLOAD, expect_version: int | None = VERSION
                 ) -> Message:
    """Read, decode and validate one message (see :func:`recv_raw`)."""
    raw = recv_raw(sock, max_payload, expect_version)
    return decode(raw.kind, raw.meta, raw.payload, raw.version, raw.nbytes)


def decode(kind: int, meta_bytes: bytes, payload: bytes, version: int = VERSION, nbytes: int = 0) -> Message:
    """Meta + payload → Message; ProtocolError ("malformed", not fatal: the frame was read whole)."""
    try:
        meta = json.loads(meta_bytes.decode("utf-8")) if meta_bytes else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("malformed", "the message description is not JSON") from None
    if not isinstance(meta, dict):
        raise ProtocolError("malformed", "the message description is not a JSON object")
    described = meta.pop("blobs", [])
    if not isinstance(described, list) or len(described) > MAX_BLOBS:
        raise ProtocolError("malformed", "bad blob list")
    arrays, offset = {}, 0
    for entry in described:
        name, typ, shape, n = _blob_entry(entry)
        if offset + n > len(payload):
            raise ProtocolError("malformed", f"blob {name!r} runs past the end of the payload")
        data = payload[offset:offset + n]
        offset += n
        if typ in CODECS:
            if len(shape) != 3 or shape[2] != 3:
                raise ProtocolError("malformed", f"image blob {name!r} must be (H, W, 3), got {shape}")
            arrays[name] = decode_image(data, tuple(shape))
        else:
            dtype = np.dtype(typ)
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != n:
                raise ProtocolError("malformed", f"blob {name!r}: {n} bytes do not hold {typ} {shape}")
            arrays[name] = np.frombuffer(data, dtype).reshape(shape).copy()
    if offset != len(payload):
        raise ProtocolError("malformed", f"{len(payload) - offset} payload bytes not described by the blob list")
    return Message(kind, meta, arrays, version, nbytes or HEADER.size + len(meta_bytes) + len(payload))


def _blob_entry(entry) -> tuple[str, str, list[int], int]:
    if not (isinstance(entry, list) and len(entry) == 4):
        raise ProtocolError("malformed", "a blob entry must be [name, type, shape, nbytes]")
    name, typ, shape, n = entry
    if not isinstance(name, str) or len(name) > 32:
        raise ProtocolError("malformed", "bad blob name")
    if typ not in DTYPES + CODECS:
        raise ProtocolError("malformed", f"blob {name!r}: unknown type {str(typ)[:20]!r}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_SIDE for d in shape)):
        raise ProtocolError("malformed", f"blob {name!r}: bad shape")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProtocolError("malformed", f"blob {name!r}: bad length")
    return name, typ, shape, n


def expect_array(msg: Message, name: str, shape: tuple[int | None, ...], dtype: str = "float32") -> np.ndarray:
    """``msg.arrays[name]`` checked against ``shape`` (None: any size) and dtype; ProtocolError otherwise."""
    arr = msg.arrays.get(name)
    if arr is None:
        raise ProtocolError("malformed", f"{msg.name} needs a {name!r} blob")
    if arr.dtype.name != dtype or arr.ndim != len(shape) or any(s is not None and s != d
                                                                 for s, d in zip(shape, arr.shape)):
        want = "×".join("N" if s is None else str(s) for s in shape)
        raise ProtocolError("malformed", f"{msg.name}: {name!r} must be {dtype} {want}, got {arr.dtype.name} "
                                         f"{'×'.join(map(str, arr.shape))}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ProtocolError("malformed", f"{msg.name}: {name!r} holds NaN or infinity")
    return arr


def splinecam_version() -> str:
    """The installed splinecam's version (package metadata), for the greeting and the hello: informative only,
    compatibility is the protocol VERSION."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("splinecam")
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- addresses


def parse_address(text: str, default_host: str = "127.0.0.1", flag: str = "--listen") -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for IPv6) → (host, port). ValueError with a one-line message."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = default_host, text
    host = host.strip("[]") or default_host
    try:
        p = int(port)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give [HOST:]PORT, e.g. 7860 or 0.0.0.0:7860") from None
    if not 0 <= p <= 65535:
        raise ValueError(f"{flag} {text!r}: the port must be 0-65535")
    return host, p


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    import ipaddress

    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
