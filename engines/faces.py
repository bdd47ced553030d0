"""Face detection, face mesh and crop maths (mediapipe 0.10.21 "solutions" API).

Shared by the live loop (``FaceTracker``), offline animation and data preparation
(``find_face``, ``stable_crop_for_frames``), calibration and evaluation (``FaceMesh``,
``find_best_frame``, ``landmark_distance``).

Conventions: images are ``H×W×3 uint8`` RGB arrays; every coordinate is in pixels of the
image it came from, x to the right, y down; a :class:`CropBox` is a square given by its centre
and side. The mediapipe models ship inside the wheel; nothing is downloaded. Detectors are
created lazily on first use and reused; a detector (a mediapipe graph) must be used from one
thread at a time.

Detection strategy of :class:`FaceDetector` (measured on the sample data, see the tests):
the short-range model (``model_selection=0``) finds every portrait in ``data/avatars`` and is the
fastest (about 1-2 ms per picture on this CPU), but misses faces smaller than about 8 % of the
picture's long side. The full-range model (``model_selection=1``, 4-7 ms) finds faces down to
about 5 % but misses faces that fill the picture (``einstein.jpg``), so it is the second try.
Last, for stills, overlapping square tiles half the picture's short side are searched with
the full-range model, which finds small faces in big pictures. The full-range model's boxes
are about 5 % larger and 3 % (of the face size) higher than the short-range model's on the same
faces; they are corrected to the short-range framing so one crop calibration holds for both.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import cv2
import numpy as np

from splinecam.engines.errors import FaceNotFoundError

log = logging.getLogger(__name__)

# Crop framing, calibrated on the sample data with the short-range detector's boxes
# (face size = the larger side of the box, about brows-to-chin):
# - samples/driving.mp4 (VoxCeleb framing, 410x412, every 4th frame): the whole frame is
#   1.87 face sizes (p10-p90 1.79-1.92) and its centre is 0.27 face sizes above the box
#   centre (p10-p90 0.13-0.33, the head nods).
# - samples/source.png (the demo's source, same framing): 1.74 and 0.23.
# - LivePortrait-cropped clips (clips/webcam/lp-d12.mp4, clips/train/*): 1.66-2.16 and
#   0.15-0.31, i.e. the same framing give or take a little.
# The defaults sit between the two VoxCeleb references.
DEFAULT_CROP_SCALE = 1.85
DEFAULT_VERTICAL_SHIFT = -0.25  # in face sizes; negative moves the crop centre up

# Full-range boxes relative to short-range boxes on the same face (13 pictures, median).
_FULL_RANGE_SIZE_RATIO = 1.05
_FULL_RANGE_CENTRE_DY = -0.03  # in face sizes (full-range centres are higher)


# ----------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class FaceBox:
    """A detected face: corners ``(x0, y0)``-``(x1, y1)`` in pixels and the detector's score.

    ``keypoints`` holds mediapipe's six face keypoints in pixels, in mediapipe's order
    (right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion; "right"
    is the person's right), or is empty. It is left out of equality.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    keypoints: tuple[tuple[float, float], ...] = ()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaceBox):
            return NotImplemented
        return (self.x0, self.y0, self.x1, self.y1, self.score) == (
            other.x0, other.y0, other.x1, other.y1, other.score)

    def __hash__(self) -> int:
        return hash((self.x0, self.y0, self.x1, self.y1, self.score))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def size(self) -> float:
        """The larger side, in pixels (mediapipe boxes are square in pixels)."""
        return max(self.width, self.height)

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    @property
    def prominence(self) -> float:
        """Area × score: how the "main" face of a picture is chosen."""
        return self.area * self.score

    def iou(self, other: "FaceBox") -> float:
        """Intersection over union with ``other`` (0 when disjoint)."""
        iw = min(self.x1, other.x1) - max(self.x0, other.x0)
        ih = min(self.y1, other.y1) - max(self.y0, other.y0)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / (self.area + other.area - inter)

    def mapped(self, scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> "FaceBox":
        """This box with every coordinate mapped by ``v * scale + offset``."""
        return FaceBox(self.x0 * scale + dx, self.y0 * scale + dy, self.x1 * scale + dx,
                       self.y1 * scale + dy, self.score,
                       tuple((x * scale + dx, y * scale + dy) for x, y in self.keypoints))


@dataclass(frozen=True)
class CropBox:
    """A square crop: centre ``(cx, cy)`` and side ``size``, in pixels. It may extend past the
    picture's edges; :func:`crop_image` fills the outside."""

    cx: float
    cy: float
    size: float

    def to_xyxy(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in pixels, floats."""
        h = self.size / 2.0
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def as_int(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` rounded to whole pixels, still square: ``x1 - x0 == y1 - y0``."""
        s = max(1, int(round(self.size)))
        x0 = int(math.floor(self.cx - s / 2.0 + 0.5))
        y0 = int(math.floor(self.cy - s / 2.0 + 0.5))
        return (x0, y0, x0 + s, y0 + s)

    def clamped(self, width: int, height: int) -> "CropBox":
        """The box moved (not resized) to lie inside a ``width × height`` picture; a box larger
        than the picture's short side shrinks to it. Use it to avoid padding at the price of a
        face off the crop's centre."""
        size = min(self.size, float(width), float(height))
        h = size / 2.0
        cx = min(max(self.cx, h), width - h)
        cy = min(max(self.cy, h), height - h)
        return CropBox(cx, cy, size)

    def scaled(self, factor: float) -> "CropBox":
        """The same centre, side multiplied by ``factor``."""
        return CropBox(self.cx, self.cy, self.size * factor)


def crop_box_for_face(face: FaceBox, scale: float = DEFAULT_CROP_SCALE,
                      vertical_shift: float = DEFAULT_VERTICAL_SHIFT) -> CropBox:
    """The square crop framing ``face`` like VoxCeleb / TPSMM training data.

    ``size = scale · face.size``; the centre is the face box's centre moved down by
    ``vertical_shift · face.size`` (the default is negative: up, to include the hair).
    """
    if scale <= 0:
        raise ValueError(f"crop scale must be positive, got {scale}")
    cx, cy = face.center
    return CropBox(cx, cy + vertical_shift * face.size, scale * face.size)


def crop_image(image_rgb: np.ndarray, box: CropBox, size: int = 256,
               border: str = "replicate") -> np.ndarray:
    """Cut ``box`` out of ``image_rgb`` (H×W×3 uint8) and resize it to ``size × size``.

    The part of the box outside the picture is filled by replicating the edge pixels
    (``border="replicate"``, the default: no black bars for the networks to animate) or with
    black (``border="constant"``). Shrinking uses ``cv2.INTER_AREA``, enlarging
    ``cv2.INTER_CUBIC``. Returns a new ``size × size × 3`` uint8 array.
    """
    _check_image(image_rgb)
    if border not in ("replicate", "constant"):
        raise ValueError(f"border must be 'replicate' or 'constant', got {border!r}")
    h, w = image_rgb.shape[:2]
    x0, y0, x1, y1 = box.as_int()
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        patch = image_rgb[y0:y1, x0:x1]
    else:
        rows = np.arange(y0, y1)
        cols = np.arange(x0, x1)
        patch = image_rgb[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
        if border == "constant":
            outside = ((rows < 0) | (rows >= h))[:, None] | ((cols < 0) | (cols >= w))[None, :]
            patch[outside] = 0
    side = x1 - x0
    if side == size:
        return np.ascontiguousarray(patch).copy()
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or image.shape[0] == 0 or image.shape[1] == 0:
        desc = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {desc}")


# ----------------------------------------------------------------------------- detection


@contextlib.contextmanager
def native_stderr_silenced():
    """mediapipe's C++ chatter (TensorFlow Lite delegates, absl warnings) goes to file descriptor 2
    whatever Python's logging says: send fd 2 to /dev/null for the duration of the block. Used only
    around building a graph and its first inferences, where that chatter is printed."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _QuietGraph:
    """A mediapipe solution whose construction and first ``quiet_calls`` inferences run with the
    native stderr silenced (that is when it prints its start-up lines); later calls run as is."""

    def __init__(self, factory, quiet_calls: int = 2):
        with native_stderr_silenced():
            self._graph = factory()
        self._quiet_left = quiet_calls

    def process(self, image):
        if self._quiet_left > 0:
            self._quiet_left -= 1
            with native_stderr_silenced():
                return self._graph.process(image)
        return self._graph.process(image)

    def close(self) -> None:
        self._graph.close()


class Detector(Protocol):
    """Anything with ``detect(image_rgb) -> list[FaceBox]`` (e.g. a fake in tests)."""

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]: ...


class FaceDetector:
    """mediapipe face detection: short-range model, then full-range, then (``tiles=True``)
    full-range on overlapping tiles for small faces in big pictures.

    ``detect(image)`` returns every face found, sorted by score (highest first). The two
    mediapipe graphs are built on first use; ``close()`` (or ``with``) frees them. Set
    ``tiles=False`` for live video, where a frame without a face should stay cheap.
    """

    def __init__(self, min_score: float = 0.5, tiles: bool = True) -> None:
        self.min_score = float(min_score)
        self.tiles = bool(tiles)
        self._models: dict[int, object] = {}

    def _model(self, selection: int):
        model = self._models.get(selection)
        if model is None:
            import mediapipe as mp  # imported late: it is slow to import

            model = _QuietGraph(lambda: mp.solutions.face_detection.FaceDetection(
                model_selection=selection, min_detection_confidence=self.min_score))
            self._models[selection] = model
        return model

    def _run(self, image: np.ndarray, selection: int) -> list[FaceBox]:
        h, w = image.shape[:2]
        result = self._model(selection).process(image)
        boxes = []
        for det in result.detections or []:
            rel = det.location_data.relative_bounding_box
            kps = tuple((k.x * w, k.y * h) for k in det.location_data.relative_keypoints)
            box = FaceBox(rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w,
                          (rel.ymin + rel.height) * h, float(det.score[0]), kps)
            if selection == 1:  # bring full-range framing to the short-range one
                size = box.size / _FULL_RANGE_SIZE_RATIO
                cx, cy = box.center
                cy -= _FULL_RANGE_CENTRE_DY * size
                half = size / 2.0
                box = FaceBox(cx - half, cy - half, cx + half, cy + half, box.score, kps)
            if box.width > 1 and box.height > 1:
                boxes.append(box)
        return boxes

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]:
        """Faces in ``image_rgb`` (H×W×3 uint8 RGB), sorted by score, highest first."""
        _check_image(image_rgb)
        image = np.ascontiguousarray(image_rgb)
        boxes = self._run(image, 0) or self._run(image, 1)
        if not boxes and self.tiles:
            boxes = self._detect_tiles(image)
        return sorted(boxes, key=lambda b: -b.score)

    def _detect_tiles(self, image: np.ndarray) -> list[FaceBox]:
        h, w = image.shape[:2]
        tile = min(h, w) // 2
        if tile < 192:
            return []
        stride = tile // 2
        found: list[FaceBox] = []
        for y in _starts(h, tile, stride):
            for x in _starts(w, tile, stride):
                part = np.ascontiguousarray(image[y:y + tile, x:x + tile])
                found += [b.mapped(1.0, x, y) for b in self._run(part, 1)]
        return _nms(found, 0.3)

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - tile, 0) + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _nms(boxes: list[FaceBox], iou: float) -> list[FaceBox]:
    kept: list[FaceBox] = []
    for b in sorted(boxes, key=lambda b: -b.score):
        if all(b.iou(k) < iou for k in kept):
            kept.append(b)
    return kept


_shared: dict[str, object] = {}
_shared_lock = threading.Lock()


def _shared_detector() -> FaceDetector:
    """A process-wide still-image detector for the module-level helpers (created once)."""
    with _shared_lock:
        det = _shared.get("detector")
        if det is None:
            det = _shared["detector"] = FaceDetector()
        return det  # type: ignore[return-value]


def most_prominent(faces: Sequence[FaceBox]) -> FaceBox | None:
    """The face with the largest area × score, or None."""
    return max(faces, key=lambda f: f.prominence, default=None)


def find_face(image_rgb: np.ndarray, what: str, detector: Detector | None = None) -> FaceBox:
    """The most prominent face (area × score) of ``image_rgb``; ``what`` names the picture in
    the error. Raises :class:`FaceNotFoundError` when there is none."""
    faces = (detector or _shared_detector()).detect(image_rgb)
    face = most_prominent(faces)
    if face is None:
        raise FaceNotFoundError(
            f"no face found in {what}: use a picture where a face is clearly visible "
            f"(frontal, well lit, not too small), or pass --crop none if it is already cropped")
    return face


def _same_person(prev: FaceBox, faces: Sequence[FaceBox], min_iou: float = 0.3,
                 max_dist: float = 0.6) -> FaceBox | None:
    """The face in ``faces`` that continues ``prev``: overlapping it (IoU ≥ min_iou) or with
    its centre within ``max_dist`` face sizes and a similar size; the best IoU, then the nearest
    centre, wins. None when no face qualifies."""
    pcx, pcy = prev.center
    best, best_key = None, None
    for f in faces:
        iou = prev.iou(f)
        fcx, fcy = f.center
        dist = math.hypot(fcx - pcx, fcy - pcy) / max(prev.size, 1e-6)
        ratio = f.size / max(prev.size, 1e-6)
        if iou >= min_iou or (dist <= max_dist and 0.6 <= ratio <= 1.67):
            key = (iou, -dist)
            if best_key is None or key > best_key:
                best, best_key = f, key
    return best


def stable_crop_for_frames(frames: Iterable[np.ndarray], sample_every: int = 5,
                           scale: float = DEFAULT_CROP_SCALE,
                           vertical_shift: float = DEFAULT_VERTICAL_SHIFT,
                           detector: Detector | None = None,
                           what: str = "the video") -> CropBox:
    """One crop for a whole clip or shot (offline animation, training data preparation).

    Faces are detected on every ``sample_every``-th frame (H×W×3 uint8 RGB). The person
    followed is the most prominent face of the first sampled frame with a face; later samples
    keep the face that continues it (other people are ignored). The crop's centre and side are
    the medians of the per-sample crops (:func:`crop_box_for_face`), enlarged if needed so that
    the face boxes' extent over the clip (5th-95th percentiles) stays inside with a margin of
    0.1 face size. Raises :class:`FaceNotFoundError` if no sampled frame has a face.
    """
    if sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    detector = detector or _shared_detector()
    track: list[FaceBox] = []
    for i, frame in enumerate(frames):
        if i % sample_every:
            continue
        faces = detector.detect(frame)
        if not track:
            face = most_prominent(faces)
        else:
            face = _same_person(track[-1], faces, min_iou=0.2, max_dist=1.0)
        if face is not None:
            track.append(face)
    if not track:
        raise FaceNotFoundError(
            f"no face found in {what}: use a clip where a face is clearly visible "
            f"(frontal, well lit, not too small), or pass --crop none if it is already cropped")
    crops = np.array([[c.cx, c.cy, c.size] for c in
                      (crop_box_for_face(f, scale, vertical_shift) for f in track)])
    cx, cy, size = np.median(crops, axis=0)
    boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in track])
    margin = 0.1 * float(np.median([f.size for f in track]))
    fx0, fy0 = np.percentile(boxes[:, :2], 5, axis=0)
    fx1, fy1 = np.percentile(boxes[:, 2:], 95, axis=0)
    needed = 2.0 * (max(cx - fx0, fx1 - cx, cy - fy0, fy1 - cy) + margin)
    return CropBox(float(cx), float(cy), float(max(size, needed)))


# ----------------------------------------------------------------------------- tracking


@dataclass(frozen=True)
class TrackState:
    """What :meth:`FaceTracker.update` reports for one frame.

    ``crop``: the smoothed crop (pixels of the frame), the last one while the face is lost,
    None before any face was seen. ``face_found``: the tracked face is in this frame (on frames
    without detection, as of the last detection). ``frames_since_seen``: 0 when found, else the
    number of detections since the face was last seen. ``face``: the raw detection followed, or
    None.
    """

    crop: CropBox | None
    face_found: bool
    frames_since_seen: int
    face: FaceBox | None = None


class _OneEuro:
    """One-Euro filter (Casiez et al., CHI 2012) on a vector; cut-offs in Hz, time in s."""

    def __init__(self, min_cutoff: np.ndarray | float, beta: np.ndarray | float,
                 d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx = None
        self.t = 0.0

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float):
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx, self.t = x.copy(), np.zeros_like(x), t
            return self.x.copy()
        dt = t - self.t
        if not dt > 0:  # equal or decreasing timestamps: assume 30 fps
            dt = 1.0 / 30.0
        self.t = self.t + dt
        dx = (x - self.x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx), dt)
        self.x = a * x + (1 - a) * self.x
        return self.x.copy()


class FaceTracker:
    """A smoothed, person-locked square crop for live video.

    ``update(frame, timestamp)`` detects faces (every ``detect_every`` frames while the face
    is found, every frame while it is lost), follows the person it locked on (the detection
    continuing the previous one: best IoU, then nearest centre — someone walking behind does
    not take the crop), and smooths the crop's centre and side with a One-Euro filter
    (``min_cutoff`` Hz, ``beta`` per crop-size/s; values in units of the crop size at lock)
    followed by a soft dead zone of ``dead_zone`` crop sizes; the side (a zoom, more visible
    than a shift) uses half the centre's ``min_cutoff`` and a third of its ``beta``. When the
    face is lost the last crop is kept; after ``reacquire_after`` detections without it, the
    most prominent face is taken instead. ``detector`` is any object with ``detect(image) -> list[FaceBox]``; by
    default a :class:`FaceDetector` without tiling, owned (and closed) by the tracker.
    """

    def __init__(self, detector: Detector | None = None, *, detect_every: int = 1,
                 scale: float = DEFAULT_CROP_SCALE,
                 vertical_shift: float = DEFAULT_VERTICAL_SHIFT,
                 min_cutoff: float = 0.8, beta: float = 2.0, dead_zone: float = 0.005,
                 reacquire_after: int = 15) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self._owns_detector = detector is None
        self.detector: Detector = detector or FaceDetector(tiles=False)
        self.detect_every = detect_every
        self.scale, self.vertical_shift = scale, vertical_shift
        self.min_cutoff, self.beta, self.dead_zone = min_cutoff, beta, dead_zone
        self.reacquire_after = reacquire_after
        self.reset()

    def reset(self) -> None:
        """Forget the tracked person and the crop: the next face seen is taken."""
        self._face: FaceBox | None = None
        self._filter = self._new_filter()
        self._ref = 1.0
        self._shown: np.ndarray | None = None  # smoothed (cx, cy, size) in pixels
        self._since_seen = 0
        self._found = False
        self._frame_index = 0

    def _lock(self, face: FaceBox) -> None:
        self._face = face
        self._ref = crop_box_for_face(face, self.scale, self.vertical_shift).size
        self._filter = self._new_filter()
        self._shown = None

    def _new_filter(self) -> _OneEuro:
        # cx, cy, size: the size (a zoom) changes slowly, is smoothed harder
        return _OneEuro(np.array([1.0, 1.0, 0.5]) * self.min_cutoff,
                        np.array([1.0, 1.0, 1 / 3]) * self.beta)

    def _smooth(self, face: FaceBox, timestamp: float) -> None:
        c = crop_box_for_face(face, self.scale, self.vertical_shift)
        target = np.array([c.cx, c.cy, c.size]) / self._ref
        filtered = self._filter(target, timestamp) * self._ref
        if self._shown is None:
            self._shown = filtered
            return
        dz = self.dead_zone * self._shown[2]
        d = filtered - self._shown
        self._shown = self._shown + np.sign(d) * np.maximum(np.abs(d) - dz, 0.0)

    def update(self, frame_rgb: np.ndarray, timestamp: float) -> TrackState:
        """Track the face in ``frame_rgb`` (H×W×3 uint8 RGB) captured at ``timestamp`` (s)."""
        detect = (not self._found) or self._frame_index % self.detect_every == 0
        self._frame_index += 1
        matched: FaceBox | None = None
        if detect:
            faces = self.detector.detect(frame_rgb)
            if self._face is not None:
                matched = _same_person(self._face, faces)
            if matched is None and (self._face is None
                                    or self._since_seen + 1 >= self.reacquire_after):
                matched = most_prominent(faces)
                if matched is not None:
                    self._lock(matched)
            if matched is not None:
                self._face = matched
                self._since_seen = 0
                self._found = True
                self._smooth(matched, timestamp)
            else:
                self._since_seen += 1
                self._found = False
        crop = None if self._shown is None else CropBox(*map(float, self._shown))
        return TrackState(crop, self._found, self._since_seen, matched)

    def close(self) -> None:
        if self._owns_detector and hasattr(self.detector, "close"):
            self.detector.close()  # type: ignore[union-attr]

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- face mesh


class FaceMesh:
    """mediapipe face mesh: 468 landmarks of the most prominent face.

    ``static=True`` (stills, calibration) detects on every call; ``static=False`` tracks
    between calls (live video, faster). The graph is built on first use.
    """

    def __init__(self, static: bool = True, min_score: float = 0.5) -> None:
        self.static, self.min_score = static, min_score
        self._mesh = None

    def landmarks(self, image_rgb: np.ndarray, face: FaceBox | None = None) -> np.ndarray | None:
        """``(468, 2)`` float32 landmark coordinates in pixels of ``image_rgb`` (H×W×3 uint8
        RGB), or None when no face is found. With ``face``, the mesh runs on a 256×256 crop
        around it (helps with small faces in big pictures)."""
        _check_image(image_rgb)
        if face is not None:
            box = crop_box_for_face(face, 2.0, 0.0)
            crop = crop_image(image_rgb, box, 256)
            pts = self.landmarks(crop)
            if pts is None:
                return None
            x0, y0, x1, _ = box.as_int()
            return (pts * np.float32((x1 - x0) / 256.0) + np.float32([x0, y0])).astype(np.float32)
        if self._mesh is None:
            import mediapipe as mp

            self._mesh = _QuietGraph(lambda: mp.solutions.face_mesh.FaceMesh(
                static_image_mode=self.static, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_score))
        h, w = image_rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image_rgb))
        if not result.multi_face_landmarks:
            return None
        lms = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in lms[:468]], dtype=np.float32)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalize_landmarks(points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` landmarks centred on their mean and divided by the square root of their
    convex hull's area (the official TPSMM ``find_best_frame`` normalisation)."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    pts = pts - pts.mean(axis=0, keepdims=True)
    area = cv2.contourArea(cv2.convexHull(pts.astype(np.float32)))
    return pts / math.sqrt(max(area, 1e-12))


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences of two normalised ``(N, 2)`` landmark sets (0 = same shape
    and pose up to translation and scale); the score ``find_best_frame`` minimises."""
    return float(((normalize_landmarks(a) - normalize_landmarks(b)) ** 2).sum())


def find_best_frame(source_rgb: np.ndarray, frames: Iterable[np.ndarray],
                    mesh: FaceMesh | None = None) -> int:
    """Index of the frame whose face landmarks best match ``source_rgb``'s (both H×W×3 uint8
    RGB, normally 256×256 face crops): the official TPSMM demo's ``find_best_frame`` with
    mediapipe face mesh instead of face-alignment. Frames without a face are skipped; returns 0
    if the source or no frame has a face."""
    own = mesh is None
    mesh = mesh or FaceMesh(static=True)
    try:
        src = mesh.landmarks(source_rgb)
        if src is None:
            log.warning("find_best_frame: no face landmarks in the source; using frame 0")
            return 0
        best, best_i = math.inf, 0
        for i, frame in enumerate(frames):
            pts = mesh.landmarks(frame)
            if pts is None:
                continue
            d = landmark_distance(src, pts)
            if d < best:
                best, best_i = d, i
        return best_i
    finally:
        if own:
            mesh.close()
