"""The best-frame search: which driving frame's face matches the avatar's best (the official TPSMM demo's
``find_best_frame``, with mediapipe face mesh landmarks instead of face-alignment)."""

from __future__ import annotations

import logging
import math
from typing import Iterable

import cv2
import numpy as np

from splinecam.engines.faces.mesh import FaceMesh

log = logging.getLogger(__name__)


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
