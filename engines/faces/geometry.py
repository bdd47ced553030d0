"""Face boxes and crop maths: what a detection is (:class:`FaceBox`), the square crop that frames it like
VoxCeleb / TPSMM training data (:class:`CropBox`, :func:`crop_box_for_face`), cutting it out
(:func:`crop_image`), and choosing among detections (:func:`most_prominent`, :func:`same_person`).

Conventions: images are ``H×W×3 uint8`` RGB arrays; every coordinate is in pixels of the image it came
from, x to the right, y down; a :class:`CropBox` is a square given by its centre and side. No mediapipe
here: pure numpy / OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

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


def box_patch(image_rgb: np.ndarray, box: CropBox, border: str = "replicate") -> np.ndarray:
    """The pixels of ``box`` (``as_int``, s × s) in ``image_rgb`` (H×W×3), at full resolution; the part outside
    the picture filled by replicating the edge pixels or with black (``border``: "replicate" / "constant").
    A view of ``image_rgb`` when the box lies inside it, else a new (s, s, 3) array."""
    h, w = image_rgb.shape[:2]
    x0, y0, x1, y1 = box.as_int()
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return image_rgb[y0:y1, x0:x1]
    if cx1 > cx0 and cy1 > cy0:  # partly outside: OpenCV's border fill (a fraction of a millisecond)
        mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
        return cv2.copyMakeBorder(np.ascontiguousarray(image_rgb[cy0:cy1, cx0:cx1]), cy0 - y0, y1 - cy1,
                                  cx0 - x0, x1 - cx1, mode, value=(0, 0, 0))
    rows, cols = np.arange(y0, y1), np.arange(x0, x1)  # wholly outside: every pixel is the border
    patch = image_rgb[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
    if border == "constant":
        patch[:] = 0
    return patch


def crop_image(image_rgb: np.ndarray, box: CropBox, size: int = 256,
               border: str = "replicate") -> np.ndarray:
    """Cut ``box`` out of ``image_rgb`` (H×W×3 uint8) and resize it to ``size × size``.

    The part of the box outside the picture is filled by replicating the edge pixels
    (``border="replicate"``, the default: no black bars for the networks to animate) or with
    black (``border="constant"``). Shrinking uses ``cv2.INTER_AREA``, enlarging
    ``cv2.INTER_CUBIC``. Returns a new ``size × size × 3`` uint8 array.
    """
    check_image(image_rgb)
    if border not in ("replicate", "constant"):
        raise ValueError(f"border must be 'replicate' or 'constant', got {border!r}")
    patch = box_patch(image_rgb, box, border)
    side = patch.shape[0]
    if side == size:
        return np.ascontiguousarray(patch).copy()
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=interp)


def check_image(image: np.ndarray) -> None:
    """ValueError unless ``image`` is an H×W×3 uint8 array with pixels."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or image.shape[0] == 0 or image.shape[1] == 0:
        desc = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {desc}")


def most_prominent(faces: Sequence[FaceBox]) -> FaceBox | None:
    """The face with the largest area × score, or None."""
    return max(faces, key=lambda f: f.prominence, default=None)


def same_person(prev: FaceBox, faces: Sequence[FaceBox], min_iou: float = 0.3,
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
