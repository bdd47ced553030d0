"""The live face tracker: a smoothed, person-locked square crop per video frame (:class:`FaceTracker`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splinecam.engines.faces.detection import Detector, FaceDetector
from splinecam.engines.faces.geometry import (DEFAULT_CROP_SCALE, DEFAULT_VERTICAL_SHIFT, CropBox, FaceBox,
                                              crop_box_for_face, most_prominent, same_person)
from splinecam.engines.one_euro import OneEuroFilter


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

    def _new_filter(self) -> OneEuroFilter:
        # cx, cy, size: the size (a zoom) changes slowly, is smoothed harder; pixel coordinates in float64
        return OneEuroFilter(np.array([1.0, 1.0, 0.5]) * self.min_cutoff,
                             np.array([1.0, 1.0, 1 / 3]) * self.beta, 1.0, dtype=np.float64)

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
                matched = same_person(self._face, faces)
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
