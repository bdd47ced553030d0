"""mediapipe face detection (0.10.21 "solutions" API): :class:`FaceDetector`, the process-wide still-image
detector (:func:`shared_detector`) and what uses it: the most prominent face of a picture
(:func:`find_face`) and one crop for a whole clip (:func:`stable_crop_for_frames`).

Detection strategy of :class:`FaceDetector` (measured on the sample data, see the tests):
the short-range model (``model_selection=0``) finds every portrait in ``data/avatars`` and is the
fastest (about 1-2 ms per picture on this CPU), but misses faces smaller than about 8 % of the
picture's long side. The full-range model (``model_selection=1``, 4-7 ms) finds faces down to
about 5 % but misses faces that fill the picture (``einstein.jpg``), so it is the second try.
Last, for stills, overlapping square tiles half the picture's short side are searched with
the full-range model, which finds small faces in big pictures. The full-range model's boxes
are about 5 % larger and 3 % (of the face size) higher than the short-range model's on the same
faces; they are corrected to the short-range framing so one crop calibration holds for both.

The mediapipe models ship inside the wheel; nothing is downloaded. Graphs are built lazily on first use
and reused; a graph must be used from one thread at a time — the shared detector too (its users are the
set-up code of one command: avatars, animate, prepare-data, calibration of int8).
"""

from __future__ import annotations

import threading
from typing import Iterable, Protocol

import numpy as np

from splinecam.engines.errors import FaceNotFoundError
from splinecam.engines.faces.geometry import (DEFAULT_CROP_SCALE,
                                              DEFAULT_VERTICAL_SHIFT, CropBox, FaceBox, check_image,
                                              crop_box_for_face, crop_image, most_prominent, same_person)
from splinecam.engines.faces.graphs import QuietGraph

# Full-range boxes relative to short-range boxes on the same face (13 pictures, median).
_FULL_RANGE_SIZE_RATIO = 1.05
_FULL_RANGE_CENTRE_DY = -0.03  # in face sizes (full-range centres are higher)


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

            model = QuietGraph(lambda: mp.solutions.face_detection.FaceDetection(
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
        check_image(image_rgb)
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


_shared: dict[str, FaceDetector] = {}
_shared_lock = threading.Lock()


def shared_detector() -> FaceDetector:
    """The process-wide still-image detector of :func:`find_face` / :func:`stable_crop_for_frames`
    (created once, on first use)."""
    with _shared_lock:
        det = _shared.get("detector")
        if det is None:
            det = _shared["detector"] = FaceDetector()
        return det


def find_face(image_rgb: np.ndarray, what: str, detector: Detector | None = None) -> FaceBox:
    """The most prominent face (area × score) of ``image_rgb``; ``what`` names the picture in
    the error. Raises :class:`FaceNotFoundError` when there is none."""
    faces = (detector or shared_detector()).detect(image_rgb)
    face = most_prominent(faces)
    if face is None:
        raise FaceNotFoundError(
            f"no face found in {what}: use a picture where a face is clearly visible "
            f"(frontal, well lit, not too small), or pass --crop none if it is already cropped")
    return face


def face_crop(image_rgb: np.ndarray, what: str, size: int = 256, detector: Detector | None = None) -> np.ndarray:
    """The (size,size,3) uint8 face crop of a picture, as the live loop crops an avatar: its most prominent
    face (:func:`find_face`; FaceNotFoundError naming ``what``) in the default crop box."""
    return crop_image(image_rgb, crop_box_for_face(find_face(image_rgb, what, detector)), size)


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
    detector = detector or shared_detector()
    track: list[FaceBox] = []
    for i, frame in enumerate(frames):
        if i % sample_every:
            continue
        faces = detector.detect(frame)
        if not track:
            face = most_prominent(faces)
        else:
            face = same_person(track[-1], faces, min_iou=0.2, max_dist=1.0)
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
